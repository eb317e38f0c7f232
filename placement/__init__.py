"""flotilla.placement (source folder `placement/`)."""
