"""DM: the last-layer embedding means alone, weight 1 (docs/protocols.md section 2)."""

from . import Method, register_method

register_method(Method("dm", "match", last=True, attention_weighted_last=False,
                       paper="Zhao & Bilen, Dataset Condensation with Distribution Matching, WACV 2023"))
