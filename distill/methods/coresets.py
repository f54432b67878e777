"""Coreset baselines: real images chosen per class (``distill.coreset``)."""

from . import Method, register_method

register_method(Method("random", "select", paper="random real images per class"))
register_method(Method("herding", "select", paper="Welling 2009 / iCaRL herding on ConvNet embeddings"))
register_method(Method("kcenter", "select", paper="Sener & Savarese 2018 greedy k-center on embeddings"))
