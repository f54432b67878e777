"""DataDAM: spatial attention matching plus the lambda-weighted last-layer term (DataDAM Eq. 5)."""

from . import Method, register_method

register_method(Method("datadam", "match", maps=("spatial",), last=True, paper="Sajedi et al., DataDAM, ICCV 2023"))
