"""Building blocks shared by the networks. One class serves 2D and 3D by taking its conv op."""
