"""The chaos script (`lynx chaos`, scripts/chaos.py): break a running lynx under load, then check that every
request was answered, every trace is whole and every cent was counted.

``targets`` says where the breaking happens (the local processes of `lynx up`, or a Kubernetes namespace),
``scenarios`` what is broken and when, ``checks`` what must hold afterwards, ``report`` what is printed.
"""
