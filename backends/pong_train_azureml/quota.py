"""The subscription's Azure ML vCPU quota in a region, checked before a job's cluster is created or used: the service
accepts a job its quota cannot hold, and the job then waits, queued, for nodes it never gets."""

from __future__ import annotations

import re
import sys
from typing import Any, Iterable, Optional

from pong_train.errors import UsageError
from pong_train_azureml.failures import azure_errors, first_line

MORE_QUOTA = ("request a quota increase in the Azure portal (Azure ML studio > Quota, or Subscriptions > Usage + "
              "quotas), or ask for fewer nodes (--instance-count) or a smaller --vm-size")
# A regional total row, by its name with case, spaces and punctuation dropped: "TotalLowPriorityCores",
# "Total Cluster Dedicated Regional vCPUs", ...; "TotalClusters" counts clusters, not vCPUs.
REGIONAL_TOTAL = re.compile(r"^(total(cluster)?(dedicated|lowpriority)?(regional)?(vcpus|cores)|cores)$")


def reported(entity: Any, attribute: str, service_key: str) -> Any:
    """One fact of an SDK entity that azure-ai-ml 1.35 fills from the service's reply under the service's own key
    names (VmSize: vCPUs, memoryGB; Usage: currentValue, name as a dict), leaving its documented attributes (v_cp_us,
    current_value) None; either will do."""
    value = getattr(entity, attribute, None)
    return value if value is not None else vars(entity).get(service_key)


def usage_names(usage: Any) -> tuple[str, str]:
    """The row's name (its `value`: a VM family such as standardNCASv3_T4Family, or a total) and its label."""
    name = reported(usage, "name", "name")
    if isinstance(name, dict):
        return name.get("value") or "", name.get("localizedValue") or name.get("localized_value") or ""
    return getattr(name, "value", None) or "", getattr(name, "localized_value", None) or ""


def squeezed(text: str) -> str:
    return re.sub(r"[^a-z0-9_]", "", text.lower())


def tier_of(usage: Any) -> str:
    """dedicated or low_priority: the service names it in the row's type (.../lowPriorityCores/usages) or its name;
    a family's two rows share one name."""
    text = squeezed(f"{usage.type or ''} {' '.join(usage_names(usage))}")
    return "low_priority" if "lowpriority" in text else "dedicated"


def limits(usage: Any, family: str) -> Optional[str]:
    """Which quota of a job on `family`'s sizes the row is: "family", "total", or None for another one. Rows of a
    workspace or a cluster (their id under /workspaces/) repeat the subscription's; the subscription's rows decide."""
    if "/workspaces/" in (usage.id or "").lower():
        return None
    value, label = usage_names(usage)
    if family and (value.lower() == family.lower() or squeezed(label).startswith(f"{family.lower()}cluster")):
        return "family"
    if REGIONAL_TOTAL.match(squeezed(value)) or REGIONAL_TOTAL.match(squeezed(label)):
        return "total"
    return None


def regional_usage(client: Any, location: str) -> Optional[list[Any]]:
    """The subscription's usage rows in `location`, or None (with a note) where the identity may not read them."""
    from azure.core.exceptions import HttpResponseError

    with azure_errors(f"reading the subscription's Azure ML quota in {location}"):
        try:
            return list(client.compute.list_usage(location=location))
        except HttpResponseError as err:
            if err.status_code != 403:
                raise
            print(f"note: your identity may not read the subscription's Azure ML quota in {location} "
                  f"({first_line(err)}); the job's vCPUs are not checked against it", file=sys.stderr)
    return None


def check_room(client: Any, cluster: Any, exists: bool, size: Any, instance_count: int, location: str) -> None:
    """The nodes the job adds to `cluster` fit the subscription's quota in `location`: the nodes it holds already
    (listed, whatever their state) count as in use, and are the job's to use."""
    vcpus = reported(size, "v_cp_us", "vCPUs") or 0
    held = allocated_nodes(client, cluster) if exists else 0
    nodes = max(instance_count, cluster.min_instances or 0) - held
    usages = regional_usage(client, location) if nodes > 0 and vcpus else None
    if usages is not None:
        what = f"{nodes} {'more ' if held else ''}node{'s' if nodes > 1 else ''} of {size.name}"
        check_quota(usages, size.family or "", cluster.tier or "dedicated", nodes * vcpus, what, location)


def allocated_nodes(client: Any, cluster: Any) -> int:
    """How many nodes the cluster holds now; its minimum where the identity may not list them."""
    from azure.core.exceptions import HttpResponseError

    with azure_errors(f"listing the nodes of compute {cluster.name}"):
        try:
            return len(list(client.compute.list_nodes(cluster.name)))
        except HttpResponseError as err:
            if err.status_code != 403:
                raise
    return cluster.min_instances or 0


def check_quota(usages: Iterable[Any], family: str, tier: str, needed: int, what: str, location: str) -> None:
    """`needed` vCPUs of `family` on `tier` nodes fit what is free of the family's quota and of the regional total;
    a limit of -1 is none of the row's own (the regional total still applies)."""
    for usage in usages:
        if tier_of(usage) != tier or limits(usage, family) is None:
            continue
        limit = reported(usage, "limit", "limit")
        used = reported(usage, "current_value", "currentValue") or 0
        if limit is None or limit < 0 or needed <= limit - used:
            continue
        value, label = usage_names(usage)
        raise UsageError(f"the job needs {needed} {tier.replace('_', '-')} vCPUs ({what}) and the subscription's "
                         f"{label or value} quota in {location} has {max(limit - used, 0)} free ({used} of {limit} "
                         f"in use); {MORE_QUOTA}")
