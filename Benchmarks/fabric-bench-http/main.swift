// fabric-bench-http: a bare libmicrohttpd responder, the ceiling of Fabric's HTTP engine in `make bench-api`.
import CMicroHTTPD
import CShims

print("fabric-bench-http")
