"""flotilla.router (source folder `router/`)."""
