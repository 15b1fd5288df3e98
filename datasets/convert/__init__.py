"""Labels from the tools people draw them in -> the project's data folder
(``python -m datasets.convert {coco,labelme,cvat} SOURCE --images DIR --out DIR``).

One module per job: a reader per format (``coco.py``, ``labelme.py``, ``cvat.py``) turns the
tool's file into images and shapes (``records.py``); ``raster.py`` is the one pixel-coverage
rule; ``build.py`` resolves the classes, draws the masks, copies the images and builds the
output folder aside; ``report.py`` is the summary; ``command.py`` the command line. The user
page is docs/labelling-tools.md.
"""
from datasets.convert.build import (DEFAULT_LINE_WIDTH, FORMATS, MARKER_FILE,
                                    NothingConvertedError, convert_dataset, resolve_classes)
from datasets.convert.report import ConvertReport

__all__ = ["FORMATS", "MARKER_FILE", "DEFAULT_LINE_WIDTH", "NothingConvertedError",
           "ConvertReport", "convert_dataset", "resolve_classes"]
