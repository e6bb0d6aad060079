"""Ray Serve shells over NOA's cores: the only package that imports ray."""
