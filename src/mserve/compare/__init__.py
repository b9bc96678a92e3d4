"""mserve compare: the same model in several serving systems, measured with the same load."""
