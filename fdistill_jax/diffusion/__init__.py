"""σ conventions (EDM/VE: x_t = x0 + σ ε), Karras grids and samplers."""
