"""Built-in generator plugins, registered through the plugin hooks (see deepinterestgr.registry.builtins)."""


def register_builtins(register) -> None:
    from deepinterestgr.generate.decoder_only import DecoderOnlySIDGenerator
    from deepinterestgr.generate.t5 import T5SIDGenerator

    register("t5", T5SIDGenerator, aliases=("tiger",),
             description="T5 encoder-decoder, one encoder position per history item (TIGER size by default)")
    register("gpt", DecoderOnlySIDGenerator, aliases=("decoder_only",),
             description="GPT-2 decoder over history items then SID tokens")
