"""Support code for every layer: devices, memory, atomic files, fingerprints, private copies, choice names."""
