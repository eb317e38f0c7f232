"""flotilla/api."""
