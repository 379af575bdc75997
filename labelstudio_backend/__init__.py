"""Label Studio ML backend for audiosim: label suggestions voted by the most similar already-labelled clips."""
