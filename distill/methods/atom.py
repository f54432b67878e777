"""ATOM: spatial and channel attention plus the lambda-weighted last-layer term (ATOM Eq. 6), and
its channel-only variant (ATOM-dagger)."""

from . import Method, register_method

register_method(Method("atom", "match", maps=("spatial", "channel"), last=True,
                       paper="Khaki et al., ATOM, CVPR-W 2024"))
register_method(Method("atom_channel", "match", maps=("channel",), last=True,
                       paper="Khaki et al., ATOM (channel-only variant, ATOM-dagger), CVPR-W 2024"))
