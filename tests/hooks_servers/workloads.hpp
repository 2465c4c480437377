// Synchronous client code for the hooks' proof, shared by the tests
// (tests/test_hooks_{libpq,hiredis,curl}.cpp) and the benchmark
// (bench/hooks_clients.cpp): plain, blocking libpq, hiredis and libcurl
// calls, written as anyone would without spindle. Each function throws
// std::runtime_error with the library's message when something fails.
//
// The same function is timed twice: sequentially on the plain thread (the
// hooks pass every call straight to the kernel), and on N fibers at once
// under spindle::run (the hooks park each fiber in connect, poll, read).
// The sequential run makes fewer calls and is extrapolated to N, so that
// the comparison costs seconds, not the tens of seconds N sequential
// 0.2 s waits would take.
//
// An includer selects the libraries it links by defining
// SPINDLE_WORKLOAD_LIBPQ, SPINDLE_WORKLOAD_HIREDIS, SPINDLE_WORKLOAD_CURL.
#pragma once

#include <fmt/format.h>

#ifdef SPINDLE_WORKLOAD_LIBPQ
#include <libpq-fe.h>
#endif
#ifdef SPINDLE_WORKLOAD_HIREDIS
#include <hiredis.h>
#endif
#ifdef SPINDLE_WORKLOAD_CURL
#include <curl/curl.h>
#endif

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <spindle/spindle.hpp>

namespace hooks_workloads {

// The server address servers.py exported; a missing variable means the
// test was not started through servers.py, which is an error, not a skip.
inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v)
    throw std::runtime_error(fmt::format("{} is not set: run through tests/hooks_servers/servers.py", name));
  return v;
}

// ------------------------------------------------------------ libpq
#ifdef SPINDLE_WORKLOAD_LIBPQ

// Connects, runs `SELECT pg_backend_pid(), pg_sleep(seconds), tag` and
// checks the tag came back. Returns the backend's pid.
inline int libpq_sleep(const std::string& conninfo, int tag, double seconds) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(conninfo.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK)
    throw std::runtime_error(fmt::format("PQconnectdb: {}", PQerrorMessage(conn.get())));
  const std::string sql = fmt::format("SELECT pg_backend_pid(), pg_sleep({}), {}", seconds, tag);
  std::unique_ptr<PGresult, decltype(&PQclear)> res(PQexec(conn.get(), sql.c_str()), &PQclear);
  if (PQresultStatus(res.get()) != PGRES_TUPLES_OK)
    throw std::runtime_error(fmt::format("PQexec: {}", PQerrorMessage(conn.get())));
  if (std::atoi(PQgetvalue(res.get(), 0, 2)) != tag)
    throw std::runtime_error(fmt::format("PQexec: tag {} came back as {}", tag, PQgetvalue(res.get(), 0, 2)));
  return std::atoi(PQgetvalue(res.get(), 0, 0));
}

#endif  // SPINDLE_WORKLOAD_LIBPQ

// ------------------------------------------------------------ hiredis
#ifdef SPINDLE_WORKLOAD_HIREDIS

using RedisConn = std::unique_ptr<redisContext, decltype(&redisFree)>;
using RedisReplyPtr = std::unique_ptr<redisReply, decltype(&freeReplyObject)>;

inline RedisConn redis_connect(int port) {
  RedisConn c(redisConnect("127.0.0.1", port), &redisFree);
  if (!c || c->err)
    throw std::runtime_error(fmt::format("redisConnect: {}", c ? c->errstr : "out of memory"));
  return c;
}

inline RedisReplyPtr redis_command(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* reply =
      static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (!reply) throw std::runtime_error(fmt::format("redisCommand {}: {}", args[0], c->errstr));
  if (reply->type == REDIS_REPLY_ERROR) {
    std::string msg(reply->str, reply->len);
    freeReplyObject(reply);
    throw std::runtime_error(fmt::format("redisCommand {}: {}", args[0], msg));
  }
  return RedisReplyPtr(reply, &freeReplyObject);
}

// A BLPOP on a list nobody pushes to: the server answers nil after
// `seconds`.
inline void redis_blpop_timeout(int port, const std::string& key, double seconds) {
  RedisConn c = redis_connect(port);
  RedisReplyPtr r = redis_command(c.get(), {"BLPOP", key, fmt::format("{}", seconds)});
  if (r->type != REDIS_REPLY_NIL)
    throw std::runtime_error(fmt::format("BLPOP {}: reply type {}", key, r->type));
}

#endif  // SPINDLE_WORKLOAD_HIREDIS

// ------------------------------------------------------------ libcurl
#ifdef SPINDLE_WORKLOAD_CURL

// GET (or POST `body`, when not null) `url` with the easy API; returns
// the response body after checking the status is 200.
inline std::string curl_fetch(const std::string& url, const std::string* body = nullptr) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> h(curl_easy_init(), &curl_easy_cleanup);
  if (!h) throw std::runtime_error("curl_easy_init failed");
  std::string out;
  auto on_data = +[](char* data, size_t size, size_t n, void* user) -> size_t {
    static_cast<std::string*>(user)->append(data, size * n);
    return size * n;
  };
  curl_easy_setopt(h.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &out);
  curl_easy_setopt(h.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h.get(), CURLOPT_TIMEOUT, 30L);
  if (body) {
    curl_easy_setopt(h.get(), CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(h.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
  }
  const CURLcode rc = curl_easy_perform(h.get());
  if (rc != CURLE_OK) throw std::runtime_error(fmt::format("curl {}: {}", url, curl_easy_strerror(rc)));
  long status = 0;
  curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) throw std::runtime_error(fmt::format("curl {}: HTTP status {}", url, status));
  return out;
}

#endif  // SPINDLE_WORKLOAD_CURL

// ------------------------------------------------------------ timing

struct Comparison {
  int sequential_calls;  // made one after another on the plain thread
  double sequential_s;   // their total time
  int fiber_calls;       // made at once, one fiber each
  double fibers_s;       // total time for all of them
  double extrapolated_s() const { return sequential_s * fiber_calls / sequential_calls; }
};

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// call(i) runs sequential_calls times on this thread, then fiber_calls
// times on as many fibers under one spindle::run.
template <class Call>
Comparison compare(int sequential_calls, int fiber_calls, Call call) {
  Comparison c{sequential_calls, 0, fiber_calls, 0};
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < sequential_calls; ++i) call(i);
  c.sequential_s = seconds_since(start);
  start = std::chrono::steady_clock::now();
  spindle::run([&] {
    std::vector<spindle::Task<void>> tasks;
    tasks.reserve(static_cast<std::size_t>(fiber_calls));
    for (int i = 0; i < fiber_calls; ++i) tasks.push_back(spindle::spawn([&call, i] { call(i); }));
    spindle::gather(tasks);
  });
  c.fibers_s = seconds_since(start);
  return c;
}

inline void print(const char* what, const Comparison& c) {
  fmt::print("{}: sequential {} calls {:.3f} s (x{} = {:.2f} s for {}), {} fibers at once {:.3f} s\n", what,
             c.sequential_calls, c.sequential_s, c.fiber_calls / c.sequential_calls, c.extrapolated_s(),
             c.fiber_calls, c.fiber_calls, c.fibers_s);
  std::fflush(stdout);
}

}  // namespace hooks_workloads
