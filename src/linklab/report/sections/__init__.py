"""The report's sections, one module each: its data classes and a ``build(inputs)`` that returns
the section's data (None leaves the section out). :mod:`linklab.report.view` registers them in
page order; :mod:`linklab.report.which` and :mod:`linklab.report.anatomy` are sections too."""
