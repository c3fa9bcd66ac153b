"""Every private API of the Azure SDKs and Ray that the azureml backend still uses, and why no public one serves.

A minor release of the SDK or Ray may move any of them: tests/test_azureml_private_apis.py, beside this package,
finds each one by name, so the move fails there, loudly, and checks that the backend uses no private API this list
leaves out.
"""

from __future__ import annotations

from pong_train.private_apis import PrivateUse

PRIVATE_APIS = (
    PrivateUse("azure.ai.ml.entities", "Command._to_job", "spec.py, resume.py",
               "jobs.create_or_update submits the `command()` builder and refuses the public CommandJob ('Non "
               "supported job type'); the CommandJob whose public `dump` writes job.yaml comes from the builder's "
               "_to_job only"),
    PrivateUse("azure.ai.ml._utils._experimental", "module_logger", "sdk.py",
               "the logger by which azure-ai-ml announces its experimental classes (RayDistribution) on every use; "
               "quieted by its name, which is its module's, since the SDK offers no switch"),
    PrivateUse("azureml.core._serialization_utils", "_serialize_to_dict", "spec.py",
               "--azureml-sdk v1 --dry-run writes the article's estimator configuration as JSON; azureml-core has no "
               "public serializer for it, and the retired v1 SDK gets no release that could move it"),
    PrivateUse("ray._raylet", "Config", "launch_mpi.py",
               "Ray reads RAY_AUTH_MODE once, when it is imported; a driver that imported Ray before the ranks agreed "
               "on token authentication must re-read it (Config.initialize), and Ray has no public call for that"),
    PrivateUse("ray._common.utils", "get_default_ray_temp_dir", "launch_mpi.py, launch_ray.py",
               "the temp dir Ray itself picks on this node (RAY_TMPDIR, else the platform's default): where `ray "
               "start` recorded the cluster this node belongs to; Ray exposes no public accessor"),
    PrivateUse("ray._private.services", "canonicalize_bootstrap_address", "launch_ray.py",
               "Ray's own resolution of address 'auto' (RAY_ADDRESS, the recorded address, a local GCS), done here "
               "without connecting: connecting to 'auto' would also switch token authentication on where Ray finds a "
               "token, which Azure ML decided when it started the cluster"),
    PrivateUse("ray", "init._temp_dir", "launch_ray.py",
               "the driver attaches to this machine's own Ray node where several nodes of the job share a machine: "
               "ray.init takes the node's temp dir by this keyword only"),
    PrivateUse("ray._private.utils", "read_ray_address", "launch_ray.py",
               "whether this node's temp dir recorded that very cluster, so the driver attaches to its own machine's "
               "Ray node when several share a machine"),
    PrivateUse("ray.experimental.internal_kv", "_internal_kv_put", "launch_ray.py",
               "the head's driver marks the end of training where every node of the job can read it, with no new "
               "actor or process to outlive the driver (Ray's public KV API is the same call, unexposed)"),
    PrivateUse("ray.experimental.internal_kv", "_internal_kv_exists", "launch_ray.py",
               "the nodes that are not the head read that end mark (see _internal_kv_put)"),
)
