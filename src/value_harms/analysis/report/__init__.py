"""The study report: top findings in sentences, figures, and one markdown + one self-contained HTML page.

format.py (numbers and tables) <- figures.py <- findings.py <- document.py (the page, W&B logging).
"""

from value_harms.analysis.report.document import log_report_to_wandb, write_report
from value_harms.analysis.report.figures import make_figures
from value_harms.analysis.report.findings import top_findings
from value_harms.analysis.report.format import fmt_num, markdown_table

__all__ = ["fmt_num", "log_report_to_wandb", "make_figures", "markdown_table", "top_findings", "write_report"]
