"""Teachers: frozen denoisers D(x, σ, labels) -> E[x0 | x_σ] (analytic, EDM, ...)."""
