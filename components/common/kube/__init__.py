"""Talking to a Kubernetes API server from a pipeline step, for every kind of job and resource.

- ``api``: the retried API call (transient errors retried, persistent ones named, a 403 turned into the
  missing RBAC rule) and the step's own namespace;
- ``kinds``: ``JobKind``, what differs between kinds of training job (API path, conditions, pod labels);
- ``jobs``: ``KubernetesJobClient``, the calls a job launcher makes for one ``JobKind``;
- ``runner``: ``run_job``, a job as a pipeline step (create or re-attach, wait, report, delete);
- ``signals``: SIGTERM turned into ``StepTerminated``, held around a create and ignored during the cleanup;
- ``logs``: the log of a job's pod followed into the step's own;
- ``pods``: why pods have not started, in their own words;
- ``values``: checks of Kubernetes values (names, quantities, labels, tolerations, environment variables).
"""
