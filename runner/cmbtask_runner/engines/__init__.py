"""Engine plugins, loaded through the ``cmbtask.engines`` entry-point group."""
