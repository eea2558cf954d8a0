"""Training: the config, the LightningModule, packs of SAEs on one stream, metrics and schedules;
`sae_lab.train(cfg)` is `training.run.train`."""
