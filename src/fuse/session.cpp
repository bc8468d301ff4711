// placeholder until the FUSE adapter lands
