"""LightningModules per task family; pure networks live in ``radiogenomics.models.nets``."""
