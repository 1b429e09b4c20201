import Shuttle

print("shuttle: runs embedded in weaver for now (see `weaver --help`)")
