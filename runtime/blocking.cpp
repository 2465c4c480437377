// The blocking pool behind spindle::run_blocking (spindle/blocking.hpp).
//
// One process-wide pool: a FIFO queue of jobs (intrusive through
// BlockingJob::next, the jobs living in their callers' frames), a thread
// limit, and the threads started so far. A submit wakes an idle thread or,
// when every thread is busy and the limit allows, starts a new one; so the
// pool grows only under load and never beyond the limit.
//
// The pool object is allocated once and never freed: threads sleep on its
// condition variable until the process ends, and destroying a condition
// variable that threads wait on (as a static destructor at exit would) is
// undefined behaviour.
#include <spindle/blocking.hpp>

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <spindle/detail/assert.hpp>

#include "platform/syscall.hpp"

namespace spindle {

namespace {

std::size_t default_limit() noexcept {
  return std::max<std::size_t>(4, 2 * static_cast<std::size_t>(std::thread::hardware_concurrency()));
}

class BlockingPool {
 public:
  static BlockingPool& instance() {
    // Leaked on purpose; see the file comment.
    static BlockingPool* pool = new BlockingPool;
    return *pool;
  }

  void submit(detail::BlockingJob* job) {
    std::unique_lock lock(mu_);
    job->next = nullptr;
    if (tail_)
      tail_->next = job;
    else
      head_ = job;
    tail_ = job;
    ++queued_;
    // Idle threads that were notified but have not woken yet still count
    // as idle, so a burst of submits starts threads for the excess only.
    if (queued_ > idle_ && threads_ < limit_) {
      try {
        start_thread_locked();
      } catch (...) {
        // With a thread running, the job is merely delayed; with none it
        // would never run, so take it back and report.
        if (threads_ == 0) {
          unlink_last_locked(job);
          throw;
        }
      }
    }
    if (idle_ > 0) cv_.notify_one();
  }

  void set_limit(std::size_t n) {
    if (n == 0) throw std::invalid_argument("spindle::set_blocking_threads: the pool needs at least one thread");
    std::unique_lock lock(mu_);
    limit_ = n;
    // Start threads for jobs that queued behind the old limit; a failure
    // here leaves them to the running threads.
    try {
      while (queued_ > idle_ && threads_ < limit_) start_thread_locked();
    } catch (const std::system_error&) {
    }
    // Surplus idle threads notice the lower limit and end.
    cv_.notify_all();
  }

  std::size_t limit() noexcept {
    std::lock_guard lock(mu_);
    return limit_;
  }

 private:
  BlockingPool() = default;

  // Starts a pool thread with every asynchronous signal blocked. The mask is
  // set around pthread_create rather than in the new thread, so no signal
  // can reach the thread before it has blocked it.
  void start_thread_locked() {
    sigset_t all, saved;
    ::sigfillset(&all);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS}) ::sigdelset(&all, sig);
    ::pthread_sigmask(SIG_BLOCK, &all, &saved);
    pthread_t tid;
    const int err = ::pthread_create(&tid, nullptr, &BlockingPool::thread_main, this);
    ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    if (err != 0)
      platform::throw_system_error(err, fmt::format("pthread_create(spindle blocking pool thread {})", threads_ + 1));
    // Linux limits names to 15 characters; a failure only loses the name.
    // The thread cannot have ended yet: it needs mu_, which we hold.
    (void)::pthread_setname_np(tid, "spindle-block");
    ::pthread_detach(tid);
    ++threads_;
  }

  void unlink_last_locked(detail::BlockingJob* job) noexcept {
    SPINDLE_ASSERT(tail_ == job, "blocking pool: the job to take back is not the last one");
    detail::BlockingJob* prev = nullptr;
    for (detail::BlockingJob* j = head_; j != job; j = j->next) prev = j;
    if (prev)
      prev->next = nullptr;
    else
      head_ = nullptr;
    tail_ = prev;
    --queued_;
  }

  static void* thread_main(void* arg) noexcept {
    static_cast<BlockingPool*>(arg)->work();
    return nullptr;
  }

  void work() noexcept {
    std::unique_lock lock(mu_);
    for (;;) {
      while (!head_ && threads_ <= limit_) {
        ++idle_;
        cv_.wait(lock);
        --idle_;
      }
      if (threads_ > limit_) {
        --threads_;
        return;
      }
      detail::BlockingJob* job = head_;
      head_ = job->next;
      if (!head_) tail_ = nullptr;
      --queued_;
      lock.unlock();
      // Completes the job's promise; `job` must not be touched afterwards.
      job->run(job);
      lock.lock();
    }
  }

  std::mutex mu_;               // guards everything below
  std::condition_variable cv_;  // idle threads wait here
  detail::BlockingJob* head_ = nullptr;
  detail::BlockingJob* tail_ = nullptr;
  std::size_t queued_ = 0;
  std::size_t idle_ = 0;     // threads waiting on cv_
  std::size_t threads_ = 0;  // threads started and not yet ended
  std::size_t limit_ = default_limit();
};

}  // namespace

void set_blocking_threads(std::size_t n) { BlockingPool::instance().set_limit(n); }

std::size_t blocking_threads() noexcept { return BlockingPool::instance().limit(); }

namespace detail {

void blocking_submit(BlockingJob* job) { BlockingPool::instance().submit(job); }

}  // namespace detail

}  // namespace spindle
