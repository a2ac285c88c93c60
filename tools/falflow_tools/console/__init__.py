"""`falflow console`: a read-only web page over a stack — jobs, their outputs, costs, dead letters."""
