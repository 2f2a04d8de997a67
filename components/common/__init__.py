"""Logic shared by several components: artifact writing, datasets, models."""
