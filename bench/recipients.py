"""Policy (a) and its fan-out family: many recipient policies differing in region or group.

The family models a network's recipients: one organizer team per region (``region: X``),
then one per local group (``groups: local-0042``, "is a member of"). Each is policy (a)
with only that condition changed, so a PolicySet can share their common work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data import REGIONS, local_group

BENCH = Path(__file__).resolve().parent
POLICY_A = BENCH / "policies" / "organizers-north.yaml"

TEMPLATE = """\
policy: {name}
require_consent: [local_organizing]
rules:
  - allow: {rule}
    when: {when}
  - forbid: deceased
    when: {{is_deceased: true}}
fields:
  first_name: show
  last_name: show
  city: show
  phone: last4
"""


def recipient(index: int) -> tuple[str, str, str]:
    """Name, rule name and ``when:`` of recipient ``index``: regions first, then groups."""
    if index < len(REGIONS):
        region = REGIONS[index]
        slug = region.lower().replace(" ", "-")
        return f"organizers-{slug}", f"supporters in {region}", f"{{region: {region}}}"
    group = local_group(index - len(REGIONS))
    return f"group-{group}", f"members of {group}", f"{{groups: {group}}}"


def write_family(folder: Path, count: int) -> list[Path]:
    """Write ``count`` recipient policies into ``folder``; return their paths in order."""
    paths = []
    for index in range(count):
        name, rule, when = recipient(index)
        path = folder / f"{name}.yaml"
        path.write_text(TEMPLATE.format(name=name, rule=rule, when=when), encoding="utf-8")
        paths.append(path)
    return paths


def load_compiled(path: Path = POLICY_A) -> Any:
    """Load and compile one policy file with the product's loader and compiler."""
    from connector_core.policy.compiler import compile_policy
    from connector_core.policy.loader import load_policy

    return compile_policy(load_policy(path))
