"""An azure-core HTTP transport that answers as Azure ML's service would, offline, for the real azure-ai-ml client.

Every request is recorded in `FakeAzureMLTransport.requests` as (method, url, json body); the number of
requests is capped, so a client loop that never ends fails instead of hanging.
"""
import io, json, re, time, datetime
from types import SimpleNamespace
from urllib.parse import urlparse, parse_qs
import requests
from urllib3.response import HTTPResponse as U3Response
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.pipeline.transport._requests_basic import RequestsTransportResponse
from azure.core.rest._requests_basic import RestRequestsTransportResponse


def vm_size(name, family, vcpus, gpus, memory_gb):
    """One entry of a region's VM size list, as the service lists it for compute clusters."""
    return {"name": name, "family": family, "vCPUs": vcpus, "gpus": gpus, "osVhdSizeMB": 1047552,
            "maxResourceVolumeMB": vcpus * 8192, "memoryGB": memory_gb, "lowPriorityCapable": True,
            "premiumIO": True, "supportedComputeTypes": ["AmlCompute", "ComputeInstance"]}


# The sizes the fake region offers to compute clusters, all on sale today: CPU, NVIDIA (T4, A100, H100) and AMD GPU
# ones. Azure retired NC (2023) and NCv3 (2025); its region lists no longer hold them.
REGION_SIZES = [
    vm_size("Standard_D2_v2", "standardDv2Family", 2, 0, 7.0),
    vm_size("Standard_D4s_v3", "standardDSv3Family", 4, 0, 16.0),
    vm_size("Standard_DS3_v2", "standardDSv2Family", 4, 0, 14.0),
    vm_size("Standard_NC4as_T4_v3", "standardNCASv3_T4Family", 4, 1, 28.0),
    vm_size("Standard_NC24ads_A100_v4", "standardNCADSA100v4Family", 24, 1, 220.0),
    vm_size("Standard_NC40ads_H100_v5", "standardNCadsH100v5Family", 40, 1, 320.0),
    vm_size("Standard_NV4as_v4", "standardNVASv4Family", 4, 1, 14.0),
]


# The service's documented rules the fake enforces, as the real one refuses what breaks them.
COMPUTE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,14}[A-Za-z0-9]")
COMPUTE_NAME_RULE = ("Compute name is invalid. It can include letters, digits and dashes. It must start with a letter, "
                     "end with a letter or digit, and be between 2 and 16 characters in length.")


def aml_compute(vm_size, location, max_nodes=4, priority="Dedicated"):
    """An Azure ML compute cluster (AmlCompute) as the service describes it."""
    return {"properties": {"computeType": "AmlCompute", "computeLocation": location, "provisioningState": "Succeeded",
                           "properties": {"vmSize": vm_size, "vmPriority": priority, "osType": "Linux",
                                          "scaleSettings": {"maxNodeCount": max_nodes, "minNodeCount": 0,
                                                            "nodeIdleTimeBeforeScaleDown": "PT2M"}}}}


def compute_instance(vm_size, location):
    """A compute instance (one person's development VM) as the service describes it: a compute, not a cluster."""
    return {"properties": {"computeType": "ComputeInstance", "computeLocation": location,
                           "provisioningState": "Succeeded",
                           "properties": {"vmSize": vm_size, "state": "Running", "applicationSharingPolicy": "Personal",
                                          "computeInstanceAuthorizationType": "personal"}}}


def compute_node(node_id, state="idle"):
    """A node a cluster holds (listNodes): counted in the subscription's usage whether idle or running a job."""
    return {"nodeId": node_id, "privateIpAddress": "10.0.0.4", "publicIpAddress": None, "port": 50000,
            "nodeState": state, "runId": None}


def usage(sub, tier, used, limit, family=None):
    """One row of the subscription's Azure ML usage in a region, as the service lists it: a VM family's vCPUs (named
    by the family, as VmSize.family has it) or the regional total, for dedicated or low-priority nodes."""
    cores = "dedicatedCores" if tier == "dedicated" else "lowPriorityCores"
    words = "Dedicated" if tier == "dedicated" else "LowPriority"
    if family is None:
        name = ("Total Cluster Dedicated Regional vCPUs" if tier == "dedicated" else "TotalLowPriorityCores",
                f"Total Cluster {words} Regional vCPUs")
        kind = cores
    else:
        name = (family, re.sub(r"^standard(.*)Family$", r"Standard \1 Family", family, flags=re.I)
                + f" Cluster {words} vCPUs")
        kind = f"vmFamily/{cores}"
    return {"id": f"/subscriptions/{sub}/providers/Microsoft.MachineLearningServices/{kind}/usages",
            "type": f"Microsoft.MachineLearningServices/{kind}/usages", "unit": "Count", "currentValue": used,
            "limit": limit, "name": {"value": name[0], "localizedValue": name[1]}}


class FakeCredential:
    """Implements the TokenCredential protocol (get_token). No AAD calls."""
    def __init__(self):
        self.calls = []
    def get_token(self, *scopes, **kwargs):
        self.calls.append(scopes)
        return AccessToken("fake-token", int(time.time()) + 3600)


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeAzureMLTransport(HttpTransport):
    """A stateful in-memory Azure ML workspace. Answers the ARM routes the SDK uses."""

    MAX_REQUESTS = 500

    def __init__(self, sub="00000000-0000-0000-0000-000000000000", rg="rg", ws="ws", location="eastus",
                 job_status_sequence=("Queued", "Running", "Completed"), computes=None):
        self.sub, self.rg, self.ws, self.location = sub, rg, ws, location
        self.requests = []          # (method, url, json body or None)
        self.jobs = {}              # name -> body
        self.codes = {}             # (name, version) -> body
        self.envs = {}              # (name, version) -> body
        self.computes = computes if computes is not None else {
            "ray-cluster": aml_compute("STANDARD_NC4AS_T4_V3", location)}
        self.job_status_sequence = list(job_status_sequence)
        self.job_statuses = {}      # name -> that job's own status sequence (else job_status_sequence)
        self._progress = {}
        self.ws_prefix = (f"/subscriptions/{sub}/resourceGroups/{rg}/providers/"
                          f"Microsoft.MachineLearningServices/workspaces/{ws}")
        self.faults = []            # what inject() queued: answered instead of the service's reply
        self.sizes = list(REGION_SIZES)  # what the workspace's region offers
        self.sizes_elsewhere = {}   # region -> the sizes it offers, for clusters outside the workspace's region
        self.nodes = {}             # cluster name -> the nodes it holds now (compute_node), idle or busy
        # The subscription's Azure ML vCPU quota in the workspace's region: (VM family or None for the regional
        # total, tier) -> [in use, limit]; a family's low-priority vCPUs count against the regional total only (-1).
        self.quota = {(None, "dedicated"): [0, 200], (None, "low_priority"): [0, 100]}
        for size in self.sizes:
            self.quota[(size["family"], "dedicated")] = [0, 100]
            self.quota[(size["family"], "low_priority")] = [0, -1]
        self.ignored_distributions = set()  # distribution types the service drops from a job it is sent, unknown to it
        self.shared_key_access = True  # False: the storage account refuses the key-based SAS the service hands out

    def inject(self, status=None, code="", message="", match="", times=1, headers=None):
        """Answer the next `times` requests whose "METHOD URL" contains `match` with an error, as the service does:
        `status` with an ARM error body {"error": {"code", "message"}} and `headers` (Retry-After, ...); status None
        is a network failure (the connection refused before any reply); KeyboardInterrupt is the user's Ctrl-C while
        the client waits for the reply. The storage account (BlobStore) answers with Azure Storage's error instead."""
        self.faults.append({"status": status, "code": code, "message": message, "match": match, "times": times,
                            "headers": headers or {}})

    def fault_for(self, request):
        for fault in self.faults:
            if fault["times"] > 0 and fault["match"] in f"{request.method} {request.url}":
                fault["times"] -= 1
                return fault
        return None

    def _advance(self, job_name):
        """One status step per status read (ARM job or run details), staying on the final status; returns it."""
        sequence = self.job_statuses.get(job_name, self.job_status_sequence)
        n = self._progress.get(job_name, 0)
        self._progress[job_name] = min(n + 1, len(sequence) - 1)
        return sequence[n]

    # -- HttpTransport abstract API -------------------------------------------------
    def __enter__(self): return self
    def __exit__(self, *a): pass
    def open(self): pass
    def close(self): pass

    def send(self, request, **kwargs):
        body = None
        data = request.content if hasattr(request, "content") else request.data
        if data:
            try:
                body = json.loads(data if isinstance(data, (str, bytes)) else data)
            except Exception:
                body = data
        self.requests.append((request.method, request.url, body))
        if len(self.requests) > self.MAX_REQUESTS:
            raise RuntimeError(f"more than {self.MAX_REQUESTS} requests: a client loop that does not end")
        fault = self.fault_for(request)
        if fault is not None and fault["status"] is KeyboardInterrupt:
            raise KeyboardInterrupt
        if fault is not None and fault["status"] is None:
            from azure.core.exceptions import ServiceRequestError
            raise ServiceRequestError(f"<urllib3.connection.HTTPSConnection object>: Failed to establish a new "
                                      f"connection: [Errno 111] Connection refused ({urlparse(request.url).hostname})")
        if fault is not None:
            status, payload, headers = fault["status"], {"error": {"code": fault["code"],
                                                                   "message": fault["message"]}}, fault["headers"]
        elif self.is_arm(request) and request.headers.get("Authorization") != "Bearer fake-token":
            status, payload, headers = 401, {"error": {"code": "AuthenticationFailed", "message": (
                "Authentication failed. The 'Authorization' header is missing.")}}, {}
        else:
            status, payload, headers = self.route(request.method, request.url, body, request)
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        r = requests.Response()
        r.status_code = status
        r.reason = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
                    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}.get(status, "X")
        r.url = request.url
        r.headers.update({"Content-Type": "application/json; charset=utf-8",
                          "x-ms-request-id": "fake", "Content-Length": str(len(raw)), **(headers or {})})
        r.raw = U3Response(body=io.BytesIO(raw), headers=dict(r.headers), status=status, preload_content=False)
        if hasattr(request, "content"):          # azure.core.rest.HttpRequest (new-style generated clients)
            resp = RestRequestsTransportResponse(request=request, internal_response=r, block_size=4096)
            if not kwargs.get("stream"):
                resp.read()
            return resp
        return RequestsTransportResponse(request, r, 4096)   # legacy azure.core.pipeline.transport.HttpRequest

    # -- routing ----------------------------------------------------------------
    @staticmethod
    def is_arm(request):
        """Requests to Azure Resource Manager carry the signed-in identity's token (blob URLs carry a SAS)."""
        return urlparse(request.url).hostname == "management.azure.com"

    def _arm(self, kind, name, version=None, props=None):
        rid = f"{self.ws_prefix}/{kind}/{name}" + (f"/versions/{version}" if version else "")
        return {"id": rid, "name": version or name, "type": f"Microsoft.MachineLearningServices/workspaces/{kind}",
                "properties": props or {},
                "systemData": {"createdAt": _now(), "createdBy": "fake", "createdByType": "User",
                               "lastModifiedAt": _now()}}

    blobs = None
    code_snapshots_exist = True
    blob_account_url = "https://fakestorage.blob.core.windows.net"  # BlobStore.url serves it on this machine

    def route_blob(self, method, u, q, request):
        """Minimal Azure Blob REST: HEAD/GET properties, PUT blob, PUT ?comp=metadata."""
        if self.blobs is None:
            self.blobs = {}
        key = u.path
        comp = q.get("comp", [None])[0]
        hdrs = {"ETag": '"0x8DFAKE"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
                "x-ms-version": "2025-01-05", "Date": "Mon, 01 Jan 2024 00:00:00 GMT"}
        fault = self.fault_for(SimpleNamespace(method=method, url=u.geturl()))
        if fault is not None:
            return self.storage_error(method, fault["status"], fault["code"], fault["message"], hdrs)
        if not self.shared_key_access and "sig" in q:  # every SAS the service hands out is signed with the key
            return self.storage_error(method, 403, "KeyBasedAuthenticationNotPermitted",
                                      "Key based authentication is not permitted on this storage account.", hdrs)
        if method in ("HEAD", "GET") and comp is None:
            if key not in self.blobs:
                return 404, b"", {**hdrs, "x-ms-error-code": "BlobNotFound", "Content-Length": "0"}
            meta = {f"x-ms-meta-{k}": v for k, v in self.blobs[key].get("meta", {}).items()}
            return 200, b"" if method == "HEAD" else self.blobs[key]["data"], {
                **hdrs, **meta, "x-ms-blob-type": "BlockBlob", "Content-Length": str(len(self.blobs[key]["data"]))}
        if method == "PUT" and comp == "metadata":
            self.blobs.setdefault(key, {"data": b""})["meta"] = {
                k[len("x-ms-meta-"):]: v for k, v in request.headers.items() if k.lower().startswith("x-ms-meta-")}
            return 200, b"", {**hdrs, "Content-Length": "0", "x-ms-request-server-encrypted": "true"}
        if method == "PUT" and comp is None:
            data = request.content if hasattr(request, "content") else request.data
            if hasattr(data, "read"):
                data = data.read()
            self.blobs[key] = {"data": data or b"", "meta": {}}
            return 201, b"", {**hdrs, "Content-Length": "0", "x-ms-request-server-encrypted": "true"}
        return 400, b"", {"x-ms-error-code": "UnsupportedInFake", "Content-Length": "0"}

    @staticmethod
    def storage_error(method, status, code, message, headers):
        """Azure Storage's refusal: its code in x-ms-error-code, and in an XML body (none for HEAD)."""
        error = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}\n'
                 f'RequestId:fake</Message></Error>').encode()
        body = b"" if method == "HEAD" else error
        return status, body, {**headers, "x-ms-error-code": code, "Content-Type": "application/xml",
                              "Content-Length": str(len(body))}

    @staticmethod
    def refuse(code, message):
        return 400, {"error": {"code": code, "message": message}}, {}

    def size(self, name):
        return next((s for s in self.sizes if s["name"].lower() == (name or "").lower()), None)

    def compute_refusal(self, name, props):
        """The service's reply to a compute it refuses to create: a bad name, a size the region lacks."""
        if not COMPUTE_NAME.fullmatch(name):
            return self.refuse("ValidationError", COMPUTE_NAME_RULE)
        vm_size = props.get("properties", {}).get("vmSize")
        if self.size(vm_size) is None:
            return self.refuse("BadRequest", f"The specified VM size {vm_size} is not available in location "
                                             f"{self.location}.")
        return None

    def job_refusal(self, props):
        """The service's reply to a job it refuses: more nodes than its cluster's maximum. A job over the vCPU quota
        is accepted, and waits (over_quota)."""
        compute = self.computes.get(props.get("computeId", "").rsplit("/", 1)[-1])
        if compute is None:
            return self.refuse("UserError", "Could not find the compute target of the job.")
        settings = compute["properties"]["properties"]
        count = (props.get("resources") or {}).get("instanceCount") or 1
        if count > settings["scaleSettings"]["maxNodeCount"]:
            return self.refuse("UserError", f"Requested {count} nodes but AzureMLCompute cluster only has "
                                            f"{settings['scaleSettings']['maxNodeCount']} maximum node(s).")
        return None

    def over_quota(self, props):
        """Whether the job's nodes need more vCPUs than the quota has free: the service takes such a job, and it stays
        queued, its cluster unable to scale up."""
        settings = self.computes[props["computeId"].rsplit("/", 1)[-1]]["properties"]["properties"]
        size = self.size(settings["vmSize"])
        needed = ((props.get("resources") or {}).get("instanceCount") or 1) * (size["vCPUs"] if size else 0)
        tier = "low_priority" if settings.get("vmPriority") == "LowPriority" else "dedicated"
        return any(limit >= 0 and needed > limit - used for used, limit in
                   (self.quota.get((family, tier), [0, -1]) for family in (size and size["family"], None)))

    def usages(self):
        """The subscription's usage rows in the workspace's region (list_usage), clusters' count first."""
        clusters = {"id": f"/subscriptions/{self.sub}/usages", "type": "Microsoft.MachineLearningServices/totalCores/"
                    "usages", "unit": "Count", "currentValue": len(self.computes), "limit": 200,
                    "name": {"value": "TotalClusters", "localizedValue": "Total Clusters"}}
        return [clusters, *(usage(self.sub, tier, used, limit, family)
                            for (family, tier), (used, limit) in self.quota.items())]

    def not_found(self, what):
        return 404, {"error": {"code": "UserError", "message": f"{what} not found (fake)"}}, {}

    def route(self, method, url, body, request):
        u = urlparse(url)
        path, q = u.path, parse_qs(u.query)
        ws = self.ws_prefix
        if u.hostname and u.hostname.endswith(".blob.core.windows.net"):
            return self.route_blob(method, u, q, request)
        # workspace discovery document (workspace.properties.discoveryUrl)
        if u.hostname == f"{self.location}.api.azureml.ms" and path == "/discovery":
            base = f"https://{self.location}.api.azureml.ms"
            return 200, {"api": base, "catalog": base, "experimentation": base, "history": base,
                         "mms": base, "modelmanagement": base, "pipelines": base, "studiometadata": base}, {}
        # run history data plane: run details polled by jobs.stream()
        m = re.fullmatch(r"/history/v1\.0" + re.escape(ws) + r"/runs/([^/]+)/details", path, re.I)
        if m and method == "GET":
            name = m.group(1)
            n = self._progress.get(name, 0)
            status = self._advance(name)
            log_url = f"https://fakestorage.blob.core.windows.net/logs/{name}/user_logs/std_log.txt?sig=fake"
            self.blobs = self.blobs or {}
            self.blobs[f"/logs/{name}/user_logs/std_log.txt"] = {
                "data": "".join(f"log line {i}\n" for i in range(n + 1)).encode(), "meta": {}}
            doc = {"runId": name, "target": "ray-cluster", "status": status,
                   "logFiles": {"user_logs/std_log.txt": log_url}, "warnings": []}
            if status == "Failed":
                doc["error"] = {"error": {"code": "UserError", "message": "ray worker died (fake)"}}
            return 200, doc, {}
        m = re.fullmatch(re.escape(ws) + r"/codes/([^/]+)/versions/([^/]+)/startPendingUpload", path, re.I)
        if m and method == "POST":
            name, ver = m.groups()
            container = "azureml-blobstore-fake"
            blob_uri = f"{self.blob_account_url}/{container}/LocalUpload/{name}"
            return 200, {"blobReferenceForConsumption": {
                             "blobUri": blob_uri, "storageAccountArmId": "fake",
                             "credential": {"credentialType": "SAS",
                                            "sasUri": f"{self.blob_account_url}/{container}?sv=2021-08-06&sig=fake"}},
                         "pendingUploadId": name, "pendingUploadType": "TemporaryBlobReference"}, {}
        # the VM sizes of a region
        m = re.fullmatch(rf"/subscriptions/{self.sub}/providers/Microsoft.MachineLearningServices/locations/"
                         r"([^/]+)/vmSizes", path, re.I)
        if m and method == "GET":
            region = m.group(1).lower()
            return 200, {"value": self.sizes if region == self.location else self.sizes_elsewhere.get(region, [])}, {}
        m = re.fullmatch(rf"/subscriptions/{self.sub}/providers/Microsoft.MachineLearningServices/locations/"
                         r"([^/]+)/usages", path, re.I)
        if m and method == "GET":
            return 200, {"value": self.usages() if m.group(1).lower() == self.location else []}, {}
        # workspace GET
        if method == "GET" and path.rstrip("/").lower() == ws.lower():
            return 200, {"id": ws, "name": self.ws, "location": self.location,
                         "type": "Microsoft.MachineLearningServices/workspaces", "kind": "Default",
                         "properties": {"discoveryUrl": f"https://{self.location}.api.azureml.ms/discovery",
                                        "mlFlowTrackingUri": f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0{ws}",
                                        "workspaceId": "11111111-1111-1111-1111-111111111111",
                                        "storageAccount": f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/Microsoft.Storage/storageAccounts/fakestorage"}}, {}
        m = re.fullmatch(re.escape(ws) + r"/computes/([^/]+)/listNodes", path, re.I)
        if m and method == "POST":
            if m.group(1) not in self.computes:
                return self.not_found("compute")
            return 200, {"nodes": self.nodes.get(m.group(1), []), "nextLink": None}, {}
        m = re.fullmatch(re.escape(ws) + r"/computes/([^/]+)", path, re.I)
        if m and method == "PUT":
            props = body["properties"]
            refused = self.compute_refusal(m.group(1), props)
            if refused:
                return refused
            props["provisioningState"] = "Succeeded"
            self.computes[m.group(1)] = {"properties": props}
            return 200, {**self._arm("computes", m.group(1)), "properties": props, "location": self.location}, {}
        if m and method == "GET":
            c = self.computes.get(m.group(1))
            if not c:
                return self.not_found("compute")
            return 200, {**self._arm("computes", m.group(1)), **c,
                         "location": c["properties"].get("computeLocation") or self.location}, {}
        # code versions: list (with hash filter) / get / put
        m = re.fullmatch(re.escape(ws) + r"/codes/([^/]+)/versions(?:/([^/]+))?", path, re.I)
        if m:
            name, ver = m.groups()
            if method == "GET" and ver is None:   # list ?hash=...&hashVersion=...
                # the service matches on content hash across names (the SDK parses name/version from the hit's id)
                h = q.get("hash", [None])[0]
                hits = [v for (n, _), v in self.codes.items()
                        if ((v["properties"].get("properties", {}).get("hash_sha256") == h) if h else n == name)]
                if h and not hits and self.code_snapshots_exist:
                    # The workspace already holds this snapshot (an earlier upload of the same content).
                    doc = self._arm("codes", "snapshot", "1", {
                        "codeUri": "https://fakestorage.blob.core.windows.net/c/LocalUpload/snapshot",
                        "isAnonymous": True, "properties": {"hash_sha256": h, "hash_version": "202208"}})
                    self.codes[("snapshot", "1")] = doc
                    hits = [doc]
                return 200, {"value": hits}, {}
            if method == "PUT":
                props = dict(body.get("properties", {}))
                doc = self._arm("codes", name, ver, props)
                self.codes[(name, ver)] = doc
                return 201, doc, {}
            if method == "GET":
                doc = self.codes.get((name, ver))
                return (200, doc, {}) if doc else self.not_found("code")
        # environment versions
        m = re.fullmatch(re.escape(ws) + r"/environments/([^/]+)/versions/([^/]+)", path, re.I)
        if m:
            name, ver = m.groups()
            if method == "PUT":
                props = dict(body.get("properties", {}))
                doc = self._arm("environments", name, ver, props)
                self.envs[(name, ver)] = doc
                return 201, doc, {}
            if method == "GET":
                doc = self.envs.get((name, ver))
                return (200, doc, {}) if doc else self.not_found("environment")
        # jobs
        m = re.fullmatch(re.escape(ws) + r"/jobs/([^/]+)/cancel", path, re.I)
        if m and method == "POST":
            if m.group(1) not in self.jobs:
                return self.not_found("job")
            self.job_statuses[m.group(1)], self._progress[m.group(1)] = ["Canceled"], 0
            return 200, b"", {}
        m = re.fullmatch(re.escape(ws) + r"/jobs/([^/]+)", path, re.I)
        if m:
            name = m.group(1)
            if method == "PUT":
                props = dict(body["properties"])
                refused = self.job_refusal(props)
                if refused:
                    return refused
                if (props.get("distribution") or {}).get("distributionType") in self.ignored_distributions:
                    del props["distribution"]
                if self.over_quota(props):
                    self.job_statuses[name] = ["Queued"]
                props.setdefault("status", "NotStarted")
                props["services"] = {"Studio": {"jobServiceType": "Studio",
                                                "endpoint": f"https://ml.azure.com/runs/{name}?wsid={ws}"}}
                doc = self._arm("jobs", name, None, props)
                doc["properties"]["status"] = "NotStarted"
                self.jobs[name] = doc
                return 201, doc, {}
            if method == "GET":
                doc = self.jobs.get(name)
                if not doc:
                    return self.not_found("job")
                doc["properties"]["status"] = self._advance(name)
                return 200, doc, {}
        return self.not_found(f"UNHANDLED {method} {url}")


class BlobStore:
    """The workspace's storage account served over HTTP on 127.0.0.1, with the transport's own blob routes.

    The SDK uploads code through a storage client it makes itself, which does not go through the fake transport; the
    fake hands out this server's path-style URL (http://127.0.0.1:PORT/ACCOUNT/CONTAINER, as Azure's storage emulator
    has them) instead of the cloud's. Bounded: it answers at most MAX_REQUESTS requests.
    """

    MAX_REQUESTS = 2000

    def __init__(self, transport):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from types import SimpleNamespace

        store = self
        self.served = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def serve(self):
                store.served += 1
                if store.served > store.MAX_REQUESTS:
                    self.send_error(503)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = urlparse(self.path)
                request = SimpleNamespace(headers=dict(self.headers.items()), content=body)
                status, payload, headers = transport.route_blob(self.command, url, parse_qs(url.query), request)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", headers.get("Content-Length", str(len(data))))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = serve

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/fakestorage"
        transport.blob_account_url = self.url

    def close(self):
        self.server.shutdown()
        self.server.server_close()
