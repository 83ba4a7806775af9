"""Network definitions (Flax linen, NHWC): EDM's SongUNet/DhariwalUNet and their preconditioning;
PixArt-α's transformer (pixart)."""
