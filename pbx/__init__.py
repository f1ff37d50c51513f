"""What every PBX adapter offers the features, whichever PBX is behind it."""
