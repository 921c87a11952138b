"""The policy presets shipped with numarun: one ``NAME.toml`` file each (see numarun.presets)."""
