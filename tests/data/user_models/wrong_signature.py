"""A model factory that cannot take (config, input_shape, output_dim): refused at validation."""


def build(config):
    return None


def load(config, split):
    return None
