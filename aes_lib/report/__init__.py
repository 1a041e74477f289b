"""Stage 05, report: the paper's kind of figures and tables, reported beside measured.

Reads what the earlier stages wrote (docs/CONTRACTS.md), writes ``figures/*.{pdf,png}``,
``tables/*.{csv,md,tex}``, ``report.json``, ``index.html`` and ``index.md`` under ``out_dir``.
Heavy libraries (matplotlib, pandas) are imported inside the functions that use them.
"""

from aes_lib.report.build import SPECS, Report, ReportConfig, build_report, register_cli
from aes_lib.report.gallery import broken_links, write_gallery
from aes_lib.report.loaders import Inputs, load_inputs
from aes_lib.report.reference import load_reference

__all__ = ["SPECS", "Inputs", "Report", "ReportConfig", "broken_links", "build_report",
           "load_inputs", "load_reference", "register_cli", "write_gallery"]
