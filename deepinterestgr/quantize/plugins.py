"""Built-in plugins of this kind, registered through the plugin hooks (see deepinterestgr.registry.builtins)."""


def register_builtins(register) -> None:
    from deepinterestgr.quantize.rqkmeans import RQKMeans
    from deepinterestgr.quantize.rqvae import RQVAE

    register("rqvae", RQVAE, aliases=("rq-vae",), description="RQ-VAE (TIGER): MLP autoencoder with residual codebooks")
    register("rqkmeans", RQKMeans, aliases=("rq-kmeans",),
             description="residual k-means (optionally balanced), no gradients")
