"""DM: the last-layer embedding means alone, weight 1 (docs/protocols.md section 2), with its
authors' settings in every preset: 20,000 iterations, 256 real images per class, image
learning rate 1 at every IPC, no loss scaling (DM's code never multiplies by 100)."""

from . import Method, register_method

register_method(Method("dm", "match", last=True, attention_weighted_last=False,
                       paper="Zhao & Bilen, Dataset Condensation with Distribution Matching, WACV 2023",
                       defaults={"iterations": 20000, "batch_real": 256, "lr_img": 1.0, "loss_scale": 1.0}))
