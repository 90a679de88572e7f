# The official TNT weights were trained on inputs normalised with mean = std = 0.5.
tnt_norm = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
