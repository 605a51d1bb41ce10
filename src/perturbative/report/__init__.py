"""The report: a sweep's results files -> statistics -> figures -> one self-contained HTML page.

Reads only the files of :mod:`perturbative.pipeline.results`; never recomputes brackets.

* ``statistics``: the numbers the report shows (correlations, co-movement, tables);
* ``figures``: matplotlib figures and images as PNG data URIs;
* ``html``: the page, from ``assets/report.html``.
"""

from perturbative.report.html import write_report as write_report
from perturbative.report.statistics import load_report_data as load_report_data
