"""Built-in dataset readers, registered through the plugin hooks (see deepinterestgr.registry.builtins)."""

from deepinterestgr.data.readers.base import DataFormatError, DatasetReader

__all__ = ["DataFormatError", "DatasetReader", "register_builtins"]


def register_builtins(register) -> None:
    from deepinterestgr.data.readers.amazon2014 import Amazon2014Reader
    from deepinterestgr.data.readers.amazon2018 import Amazon2018Reader
    from deepinterestgr.data.readers.amazon2023 import Amazon2023Reader
    from deepinterestgr.data.readers.letter import LetterReader
    from deepinterestgr.data.readers.minionerec import MiniOneRecReader
    from deepinterestgr.data.readers.p5 import P5Reader
    from deepinterestgr.data.readers.recbole import RecBoleReader
    from deepinterestgr.data.readers.synthetic import SyntheticReader

    register("amazon2014", Amazon2014Reader, aliases=("amazon14",))
    register("amazon2018", Amazon2018Reader, aliases=("amazon18",))
    register("amazon2023", Amazon2023Reader, aliases=("amazon23",))
    register("letter", LetterReader, aliases=("lcrec",))
    register("p5", P5Reader, aliases=("s3rec",))
    register("minionerec", MiniOneRecReader)
    register("recbole", RecBoleReader, aliases=("unisrec",))
    register("synthetic", SyntheticReader)
