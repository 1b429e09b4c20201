#ifndef FABRIC_CCURL_SHIM_H
#define FABRIC_CCURL_SHIM_H
// libcurl (libcurl4-openssl-dev) and typed wrappers for its variadic calls, which Swift cannot make:
// curl_easy_setopt and curl_easy_getinfo take one argument whose type depends on the option.
#include <curl/curl.h>
#include <stddef.h>

/// A libcurl data callback (CURLOPT_WRITEFUNCTION, CURLOPT_HEADERFUNCTION).
typedef size_t (*fabric_curl_data_callback)(char *data, size_t size, size_t count, void *context);

/// curl_easy_setopt for options that take a long (flags, timeouts in milliseconds, sizes).
static inline CURLcode fabric_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt for options that take a curl_off_t (large sizes).
static inline CURLcode fabric_curl_setopt_off(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt for options that take a C string; libcurl copies strings (since 7.17).
static inline CURLcode fabric_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt for options that take a pointer (callback contexts, header lists).
static inline CURLcode fabric_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt for the data callbacks.
static inline CURLcode fabric_curl_setopt_callback(CURL *handle, CURLoption option, fabric_curl_data_callback cb) {
    return curl_easy_setopt(handle, option, cb);
}

/// curl_easy_setopt for in-memory blobs (CA bundle, client certificate, client key); libcurl copies the bytes.
static inline CURLcode fabric_curl_setopt_blob(CURL *handle, CURLoption option, const void *data, size_t length) {
    struct curl_blob blob;
    blob.data = (void *)data;
    blob.len = length;
    blob.flags = CURL_BLOB_COPY;
    return curl_easy_setopt(handle, option, &blob);
}

/// curl_easy_getinfo for values of type long (response code).
static inline CURLcode fabric_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

/// The result code of a finished transfer's CURLMSG_DONE message (a union member Swift reads awkwardly).
static inline CURLcode fabric_curl_message_result(const CURLMsg *message) {
    return message->data.result;
}

#endif
