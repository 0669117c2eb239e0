"""Model families as plug-ins: each family declares itself once (`registry.Family`) in its own
package here and registers with one line in `builtin.py`; tasks, tabs, the loader and the API
find it through `FAMILIES`. See docs/ARCHITECTURE.md for a worked example."""

from .registry import FAMILIES, Family, FamilyRegistry, Hook, Option, check_card, register, resolve

__all__ = ["FAMILIES", "Family", "FamilyRegistry", "Hook", "Option", "check_card", "register", "resolve"]
