"""`lynx load`: drive chat completions through a gateway and report throughput, latency, cost and memory.

``driver`` sends the requests and records one ``RequestRecord`` each (the chaos script drives with it too);
``report`` turns records into figures and Markdown; ``plots`` draws them over time; ``cli`` is the command.
"""
