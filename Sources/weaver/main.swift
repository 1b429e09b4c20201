import Weaver

print("weaver: not yet wired")
