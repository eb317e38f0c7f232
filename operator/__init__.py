"""flotilla.operator (source folder `operator/`)."""
