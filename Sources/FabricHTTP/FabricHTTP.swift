// HTTP server on libmicrohttpd, router, request/response, JSON errors.
import FabricCore
