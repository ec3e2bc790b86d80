"""Link emulation: the per-direction link contract and the backends that honour it."""
