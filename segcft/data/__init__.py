"""Data layer: readers and writers, MONAI transforms, datalists, JSRT and phantoms."""
