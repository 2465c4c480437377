// A line-based chat server: every line a client sends goes to every other
// client, through Queues.
//
//   chat_server [--port N] [--outbox LINES] [--grace SECONDS]
//
// Listens on 127.0.0.1 and prints "listening on 127.0.0.1:PORT". Try two
// terminals running `nc 127.0.0.1 PORT`.
//
// Shape:
//
//   reader fiber, one per client  --put-->  hub Queue(1024)
//   broadcaster fiber             <--get--  hub Queue
//   broadcaster fiber             --try_put-->  each other client's outbox Queue(64)
//   writer fiber, one per client  <--get--  its outbox, then write_all to the socket
//
// Protocol: the server greets a client with "* welcome, you are userN" and
// tells the others "* userN joined" / "* userN left". A line "hello" from
// userN reaches everyone else as "userN: hello". Lines are at most 1,024
// bytes; a longer one ends that client's connection. "\r\n" is accepted.
//
// Slow clients: each client has a bounded outbox (64 lines by default). The
// broadcaster never waits for one client: it try_puts into each outbox, and
// a client whose outbox is full -- it has stopped reading, its socket buffers
// are full, and 64 more lines are waiting -- is DISCONNECTED, not silently
// skipped, so no client ever sees a conversation with holes in it. Its
// pending lines are dropped with it and the others are told it left.
// Readers put into the hub with a blocking put, so if the broadcaster falls
// behind, the fast talkers wait: memory stays bounded everywhere.
//
// SIGINT or SIGTERM: the listener closes, every client gets
// "* server shutting down" after what is already in its outbox, then its
// connection closes. Clients that do not take their lines within the grace
// period (2 s) are cut off. Exit status 0.
#include <fmt/format.h>

#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

#include <spindle/clock.hpp>
#include <spindle/event.hpp>
#include <spindle/net.hpp>
#include <spindle/queue.hpp>
#include <spindle/run.hpp>
#include <spindle/signal.hpp>
#include <spindle/task.hpp>
#include <spindle/this_fiber.hpp>

namespace {

constexpr std::size_t kMaxLine = 1024;
constexpr std::size_t kHubDepth = 1024;

struct Options {
  std::uint16_t port = 0;
  std::size_t outbox = 64;
  double grace_seconds = 2;
};

Options parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--port" && i + 1 < argc) {
      o.port = static_cast<std::uint16_t>(std::atoi(argv[++i]));
    } else if (a == "--outbox" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      o.outbox = static_cast<std::size_t>(std::atoi(argv[++i]));
    } else if (a == "--grace" && i + 1 < argc) {
      o.grace_seconds = std::strtod(argv[++i], nullptr);
    } else {
      fmt::print(stderr, "usage: {} [--port N] [--outbox LINES] [--grace SECONDS]\n", argv[0]);
      std::exit(2);
    }
  }
  return o;
}

// A line on its way out. Shared, so a broadcast to a thousand clients
// formats and allocates the text once.
using Line = std::shared_ptr<const std::string>;

Line make_line(std::string text) { return std::make_shared<const std::string>(std::move(text)); }

struct Client {
  Client(std::uint64_t id, std::size_t outbox_depth) : id(id), name(fmt::format("user{}", id)), outbox(outbox_depth) {}
  std::uint64_t id;
  std::string name;
  spindle::Queue<Line> outbox;
  spindle::TaskRef<void> writer;  // the fiber taking from the outbox
  bool kicked = false;            // disconnected by the broadcaster for being too slow
};

// What the hub carries: a line to send to everyone but `from` (0: everyone).
struct Message {
  std::uint64_t from = 0;
  Line text;
};

class ChatServer {
 public:
  explicit ChatServer(const Options& opt) : opt_(opt), hub_(kHubDepth) {}

  // Takes lines from the hub and fans them out; runs until the hub shuts down.
  void broadcast() {
    try {
      for (;;) {
        Message m = hub_.get();
        for (auto& [id, client] : clients_) {
          if (id == m.from || client->outbox.is_shut_down()) continue;
          if (!client->outbox.try_put(m.text)) kick(*client);
        }
        // get() does not park while the hub holds lines, so without this
        // a burst would reach every outbox before any writer ran, and
        // clients that read perfectly well would look slow. Yielding lets
        // the writers just readied send the line first: an outbox then
        // fills only behind a socket its client does not empty.
        spindle::this_fiber::yield();
      }
    } catch (const spindle::QueueShutDown&) {
    }
  }

  // One connection, from greeting to close.
  void session(spindle::net::TcpStream stream) {
    if (stopping_) return;  // accepted just before the listener closed
    auto client = std::make_shared<Client>(++last_id_, opt_.outbox);
    const std::string peer = stream.peer_address().to_string();
    clients_.emplace(client->id, client);
    none_left_.clear();
    fmt::print("{} connected from {} ({} online)\n", client->name, peer, clients_.size());
    client->outbox.put(make_line(fmt::format("* welcome, you are {}\n", client->name)));
    announce(client->id, fmt::format("* {} joined\n", client->name));

    // Two fibers share the socket, one per direction. The session ends with
    // the writer, which stops when its outbox is shut down and empty (the
    // reader saw EOF, or the server is stopping), on a send error, or when
    // a kick cancels it, possibly in the middle of a write_all that a
    // client who does not read would never let finish. Leaving the inner
    // scope then cancels the reader through its Task's destructor.
    std::string why = "closed";
    auto writer = spindle::spawn([&] {
      try {
        for (;;) {
          Line line = client->outbox.get();
          stream.write_all(*line);
        }
      } catch (const spindle::QueueShutDown&) {
      } catch (const std::system_error& e) {
        why = e.what();
      }
    });
    client->writer = writer.ref();
    {
      auto reader = spindle::spawn([&] {
        auto reason = read_lines(stream, *client);
        if (why == "closed") why = std::move(reason);
      });
      writer.wait();
    }
    clients_.erase(client->id);
    if (client->kicked) why = fmt::format("too slow ({} lines waiting)", opt_.outbox);
    fmt::print("{} disconnected: {} ({} online)\n", client->name, why, clients_.size());
    if (!stopping_) announce(client->id, fmt::format("* {} left\n", client->name));
    if (clients_.empty()) none_left_.set();
  }

  // Closes the door and says goodbye; returns once every client is gone or
  // the grace period is over.
  void shut_down() {
    stopping_ = true;
    fmt::print("shutting down: {} client(s) online\n", clients_.size());
    auto goodbye = make_line("* server shutting down\n");
    for (auto& [id, client] : clients_) {
      if (client->outbox.is_shut_down()) continue;
      // A full outbox belongs to a client that will not read the goodbye.
      if (!client->outbox.try_put(goodbye)) kick(*client);
      client->outbox.shutdown();
    }
    hub_.shutdown(true);
    auto deadline = spindle::now() + std::chrono::duration_cast<spindle::Duration>(
                                         std::chrono::duration<double>(opt_.grace_seconds));
    while (!clients_.empty()) {
      if (!none_left_.wait_until(deadline)) {
        fmt::print("grace period over: cutting off {} client(s)\n", clients_.size());
        break;
      }
    }
  }

  void run_acceptor(spindle::net::TcpListener& listener) {
    for (;;) {
      auto accepted = listener.accept();
      spindle::spawn([this](spindle::net::TcpStream s) { session(std::move(s)); },
                     std::move(accepted.stream))
          .detach();
    }
  }

 private:
  // Returns why reading stopped. Every complete line goes to the hub.
  std::string read_lines(spindle::net::TcpStream& stream, Client& client) {
    std::string why = "closed";
    try {
      for (;;) {
        std::string line = stream.read_line(kMaxLine);
        if (line.empty() || line.back() != '\n') break;  // EOF (a last partial line is dropped)
        line.pop_back();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        hub_.put(Message{client.id, make_line(fmt::format("{}: {}\n", client.name, line))});
      }
    } catch (const spindle::net::LimitExceeded&) {
      why = fmt::format("line longer than {} bytes", kMaxLine);
    } catch (const std::system_error& e) {
      why = e.what();
    } catch (const spindle::QueueShutDown&) {
      why = "server shutting down";
    }
    // Lets the writer send what is queued and then finish the session.
    client.outbox.shutdown();
    return why;
  }

  void announce(std::uint64_t from, std::string text) {
    try {
      hub_.put(Message{from, make_line(std::move(text))});
    } catch (const spindle::QueueShutDown&) {
      // The server is stopping: nobody is left to tell.
    }
  }

  // Drops the client's pending lines and cancels its writer, wherever it
  // is parked; the session then cancels the reader and closes the socket.
  void kick(Client& client) {
    client.kicked = true;
    client.outbox.shutdown(true);
    client.writer.cancel();
  }

  const Options& opt_;
  spindle::Queue<Message> hub_;
  // Single-threaded: fibers of one scheduler, switching only where they
  // park, so the map needs no lock. The broadcaster never parks while it
  // walks the map (try_put does not park).
  std::map<std::uint64_t, std::shared_ptr<Client>> clients_;
  std::uint64_t last_id_ = 0;
  bool stopping_ = false;
  spindle::Event none_left_;
};

}  // namespace

int main(int argc, char** argv) {
  Options opt = parse_args(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // Blocked before anything else, so a signal that arrives before the
  // signal fiber waits stays pending rather than killing the process.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  // Outside run(): the sessions still open when the root fiber returns
  // are cancelled by run() afterwards, and unwind through the server.
  ChatServer server(opt);
  return spindle::run([&] {
    using namespace spindle::net;
    auto listener = TcpListener::bind(SocketAddress::parse("127.0.0.1", opt.port));
    fmt::print("listening on {}\n", listener.local_address().to_string());

    auto broadcaster = spindle::spawn([&] { server.broadcast(); });
    auto acceptor = spindle::spawn([&] { server.run_acceptor(listener); });

    int sig = spindle::wait_signal({SIGINT, SIGTERM});
    fmt::print("SIG{}: ", sigabbrev_np(sig));
    acceptor.cancel();
    acceptor.wait();
    listener.close();
    server.shut_down();
    broadcaster.join();
    fmt::print("stopped\n");
    return 0;  // run() cancels the sessions still open and waits for them
  });
}
