#include "runtime/scheduler.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>

#include <spindle/detail/assert.hpp>
#include <spindle/future.hpp>
#include <spindle/gather.hpp>
#include <spindle/io.hpp>
#include <spindle/task_group.hpp>
#include <spindle/this_fiber.hpp>
#include <spindle/timeout.hpp>

#include "platform/syscall.hpp"

namespace spindle::detail {

SPINDLE_TLS_MODEL constinit thread_local Scheduler* Scheduler::tls_current_ = nullptr;

namespace {

std::int64_t steady_ns() noexcept { return to_ns(Clock::now()); }


// While a fiber unwinds (std::uncaught_exceptions() > 0), cancellation is
// deferred and only Timeout scopes opened by the destructor that runs can
// interrupt it: a destructor that parks must be able to finish.
//
// The earliest deadline among the Timeout scopes in force at unwinding depth
// `depth` (the innermost scopes opened at that depth, up to a Shield).
std::int64_t scope_deadline_at(const Fiber* f, int depth) noexcept {
  if (depth == 0) return f->scope_deadline;
  std::int64_t d = kNoDeadline;
  for (const TimeoutScopeRec* r = f->scopes; r && r->uncaught == depth; r = r->outer) {
    d = std::min(d, r->deadline);
    if (r->outer_min == kNoDeadline) break;
  }
  return d;
}

// `name`, when given, is what the call waited on (a wait on an fd names it).
[[noreturn]] void throw_timeout(Fiber* f, std::int64_t now, const char* call, const SlotName* name) {
  for (TimeoutScopeRec* r = f->scopes; r; r = r->outer) {
    if (r->deadline <= now) r->expired = true;
    // Scopes further out are hidden by a Shield (or never expire): their
    // deadline did not make this call throw.
    if (r->outer_min == kNoDeadline) break;
  }
  raise_off_small_stack([&] {
    if (name) throw TimeoutError(fmt::format("{}({}={}): Timeout expired", call, name->key, name->value));
    throw TimeoutError(fmt::format("{}: Timeout expired", call));
  });
}

// Throws what is due for the running fiber before it parks.
void check_interrupt(Scheduler* s, Fiber* f, const char* call, const SlotName* name = nullptr) {
  const int depth = std::uncaught_exceptions();
  if (depth == 0 && f->cancel_requested && f->shield_depth == 0) {
    f->cancel_requested = false;
    f->refresh_attention();
    throw Cancelled{};
  }
  const std::int64_t deadline = scope_deadline_at(f, depth);
  if (deadline != kNoDeadline) {
    std::int64_t now = s->now();
    if (now >= deadline) throw_timeout(f, now, call, name);
  }
}

[[noreturn, gnu::noinline, gnu::cold]] void throw_outside_fiber(const char* call) {
  throw std::logic_error(fmt::format("{} called outside a fiber (no spindle::run on this thread)", call));
}

Scheduler& require_scheduler(const char* call) {
  Scheduler* s = Scheduler::current();
  if (!s) throw_outside_fiber(call);
  return *s;
}

}  // namespace

// Unnamed fibers are named on demand: formatting a name at every spawn
// would cost more than the rest of spawn.
std::string fiber_name(const Fiber* f) {
  return f->name.empty() ? fmt::format("fiber-{}", f->id) : f->name;
}

// ---------------------------------------------------------------- lifecycle

Scheduler::Scheduler(const RunOptions& options)
    : clock_(options.clock),
      default_stack_(options.default_stack_size ? options.default_stack_size : kDefaultStackSize),
      eh_globals_(thread_eh_globals()),
      share_fp_flags_(fp_frame_layout_ok()) {
  main_.sched = this;
  main_.state = FiberState::runnable;
  main_.name = "spindle::run";
  main_.refs = 1;
  // The thread's own context never takes cancellation or Timeouts.
  main_.shield_depth = 1;
  install_overflow_handler();
  altstack_ = install_thread_altstack();
  tls_current_ = this;
}

Scheduler::~Scheduler() {
  SPINDLE_ASSERT(live_ == 0, fmt::format("{} fibers alive at scheduler exit", live_));
  tls_current_ = nullptr;
  remove_thread_altstack(altstack_);
}

void Scheduler::start(Fiber* f, std::string&& name, std::size_t stack_size) {
  Stack st = stacks_.acquire(stack_size ? stack_size : default_stack_);
  if (st.small && !side_stack_.base) {
    try {
      require_immediate_binding(stack_size);
      prepare_small_stack_unwinding();
      side_stack_ = stacks_.acquire(kSideStackSize);
    } catch (...) {
      stacks_.release(st);
      throw;
    }
  }
  f->stack_base = st.base;
  f->stack_size = st.size;
  f->small_stack = st.small;
  f->sched = this;
  f->id = ++next_id_;
  if (!name.empty()) f->name = std::move(name);
  f->refs = 2;  // the caller's handle and the running fiber
  f->state = FiberState::runnable;
  init_context(f);
  f->all_prev = nullptr;
  f->all_next = all_head_;
  if (all_head_) all_head_->all_prev = f;
  all_head_ = f;
  ++live_;
  push(f);
}

void Scheduler::fiber_main(Fiber* self) noexcept {
  self->body(self);
  self->state = FiberState::done;
  if (self->all_prev)
    self->all_prev->all_next = self->all_next;
  else
    all_head_ = self->all_next;
  if (self->all_next) self->all_next->all_prev = self->all_prev;
  --live_;
  // The stamp lets gather() tell which of several failures came first.
  const std::uint64_t seq = ++finish_seq_;
  while (WaitNode* n = self->joiners.pop_front()) {
    n->value = seq;
    ready(n->fiber, WakeReason::ready);
  }
  if (self->group) {
    GroupCore& g = *self->group;
    --g.running;
    if (self->error && !self->cancelled_exit && !g.failed) {
      g.failed = true;
      g.first_error = self->error;
      group_cancel(g);
    }
    if (g.running == 0)
      while (WaitNode* n = g.waiters.pop_front()) ready(n->fiber, WakeReason::ready);
  }
  if (main_waits_for_exit_) ready(&main_, WakeReason::ready);
  // The next context reclaims this stack once it runs on its own.
  switch_to(self, next_runnable());
  SPINDLE_ASSERT(false, fmt::format("resumed dead fiber {}", self->id));
  __builtin_unreachable();
}

void Scheduler::reclaim(Fiber* dead) noexcept {
  stacks_.release({dead->stack_base, dead->stack_size, dead->small_stack});
  dead->stack_base = nullptr;
  dead->sched = this;
  release_fiber(dead);
}

void Scheduler::finish_run(Fiber* root) noexcept {
  wait_done_shielded(root);
  // Like asyncio.run: whatever is still alive is cancelled and awaited. A
  // fiber that swallows Cancelled is cancelled again each round.
  stacks_.set_trimming(false);
  while (live_ > 0) {
    for (Fiber* f = all_head_; f; f = f->all_next) request_cancel(f);
    main_waits_for_exit_ = true;
    park(&main_, kNoDeadline);
    main_waits_for_exit_ = false;
  }
}

// ----------------------------------------------------------- park / ready

[[gnu::always_inline]] inline void Scheduler::switch_to(Fiber* from, Fiber* to) noexcept {
  running_ = to;
  switch_context(this, from, to);
}

// The fast path (a runnable fiber, no poll due) is inlined into park and
// fiber exit; polling and the idle wait are out of line.
[[gnu::always_inline]] inline Fiber* Scheduler::next_runnable() noexcept {
  Fiber* next = head_;
  if (--poll_budget_ == 0 || !next) [[unlikely]]
    return next_runnable_slow();
  head_ = next->next;
  if (!head_) tail_ = nullptr;
  return next;
}

[[gnu::noinline]] Fiber* Scheduler::next_runnable_slow() noexcept {
  if (poll_budget_ == 0) {
    poll_budget_ = kPollInterval;
    poll_from_fiber(false);
  }
  while (!head_) poll_from_fiber(true);
  return pop();
}

void Scheduler::poll_from_fiber(bool may_block) noexcept {
  off_small_stack([&] { poll(may_block); });
}

WakeReason Scheduler::park(Fiber* f, std::int64_t deadline) noexcept {
  SPINDLE_ASSERT(f == running_, "park() of a fiber that is not running");
  // std::uncaught_exceptions() without the call into libstdc++: the thread's
  // exception globals hold the running fiber's state (runtime/context.cpp).
  const int depth = static_cast<int>(eh_globals_->uncaught);
  f->interruptible = depth == 0 && f->shield_depth == 0;
  if (f->interruptible && f->cancel_requested) return WakeReason::cancelled;
  std::int64_t effective = deadline;
  // No scope in force (the common case) needs no walk of the scope records.
  if (f->scope_deadline != kNoDeadline) [[unlikely]]
    effective = std::min(deadline, scope_deadline_at(f, depth));
  f->state = FiberState::parked;
  f->wake_reason = WakeReason::ready;
  if (effective != kNoDeadline) timers_.add(f, effective);
  Fiber* next = next_runnable();
  if (next != f) switch_to(f, next);
  ++f->park_seq;
  return f->wake_reason;
}

void Scheduler::ready(Fiber* f, WakeReason r) noexcept {
  if (f->state != FiberState::parked) return;
  f->state = FiberState::runnable;
  f->wake_reason = r;
  if (f->timer_index != kNotInHeap) timers_.remove(f);
  push(f);
}

// The hot path of this_fiber::yield: no call that needs saved registers,
// so the function compiles to a handful of loads and stores and a tail jump
// into switch_context. Everything rare (the poll every kPollInterval
// switches, an empty run queue) is in yield_slow.
[[gnu::always_inline]] inline void Scheduler::yield(Fiber* f) noexcept {
  Fiber* next = head_;
  if (--poll_budget_ == 0 || !next) [[unlikely]]
    return yield_slow(f);
  f->next = nullptr;
  if (next == tail_) {
    // One other fiber: the common ping-pong, without the general queue walk.
    head_ = tail_ = f;
  } else {
    head_ = next->next;
    tail_->next = f;
    tail_ = f;
  }
  switch_to(f, next);
}

[[gnu::noinline]] void Scheduler::yield_slow(Fiber* f) noexcept {
  if (poll_budget_ == 0) {
    poll_budget_ = kPollInterval;
    poll_from_fiber(false);
  }
  if (!head_) {
    // Alone: a timer may have fallen due (a manual clock just moved); its
    // fiber runs now, as clock.hpp promises, not kPollInterval yields later.
    if (timers_.empty()) return;
    expire_timers();
    if (!head_) return;
  }
  f->next = nullptr;
  tail_->next = f;
  tail_ = f;
  switch_to(f, pop());
}

void Scheduler::request_cancel(Fiber* f) noexcept {
  if (f->state == FiberState::done) return;
  f->cancel_requested = true;
  f->attention = true;
  if (f->state == FiberState::parked && f->interruptible) ready(f, WakeReason::cancelled);
}

void Scheduler::post_remote(Fiber* f, std::uint32_t seq) noexcept {
  {
    std::lock_guard lock(remote_mu_);
    remote_.push_back({f, seq});
  }
  if (!remote_pending_.exchange(true, std::memory_order_acq_rel)) poller_.wake();
}

void Scheduler::drain_remote() noexcept {
  remote_pending_.store(false, std::memory_order_release);
  {
    std::lock_guard lock(remote_mu_);
    if (remote_.empty()) return;
    remote_spare_.swap(remote_);
  }
  for (const RemoteWake& w : remote_spare_)
    if (w.fiber->park_seq == w.seq) ready(w.fiber, WakeReason::ready);
  remote_spare_.clear();
}

// ------------------------------------------------------------- idle step

std::int64_t Scheduler::now() const noexcept { return clock_ ? to_ns(clock_->now()) : steady_ns(); }

void Scheduler::poll(bool may_block) noexcept {
  std::optional<Nanos> timeout = Nanos(0);
  const bool idle = may_block && !head_;
  if (idle) {
    if (timers_.empty()) {
      timeout = std::nullopt;
    } else if (!clock_) {
      timeout = Nanos(std::max<std::int64_t>(0, timers_.next_deadline() - now()));
    } else if (!clock_->auto_advance() && timers_.next_deadline() > now()) {
      // Only I/O or another thread can move things now. A timer that
      // advance() already made due is expired below without blocking.
      timeout = std::nullopt;
    }
  }
  const bool must_poll = timeout != Nanos(0) || watched_fds_ > 0 || remote_pending_.load(std::memory_order_acquire);
  if (must_poll) {
    poller_.wait(events_, timeout);
    dispatch_io();
    drain_remote();
  }
  expire_timers();
  // Paused time: nothing to do until the next timer, so jump to it.
  if (idle && clock_ && clock_->auto_advance() && !head_ && !timers_.empty()) {
    clock_->set(TimePoint(std::chrono::nanoseconds(timers_.next_deadline())));
    expire_timers();
  }
}

void Scheduler::dispatch_io() noexcept {
  for (const ReadyEvent& ev : events_) {
    if (!event_is_current(ev)) continue;  // the fd was forgotten or reused
    IoSlot* s = ev.slot;
    if (ev.hangup) s->hangup = true;
    // A waiter already readied by its timer or a cancel has not run yet
    // to withdraw; keep the edge for whoever waits next instead of losing it.
    if (ev.readable || ev.hangup) {
      if (s->reader && s->reader->state == FiberState::parked)
        ready(std::exchange(s->reader, nullptr), WakeReason::ready);
      else
        s->read_ready = true;
    }
    if (ev.writable || ev.hangup) {
      if (s->writer && s->writer->state == FiberState::parked)
        ready(std::exchange(s->writer, nullptr), WakeReason::ready);
      else
        s->write_ready = true;
    }
  }
}

void Scheduler::expire_timers() noexcept {
  if (timers_.empty()) return;
  timers_.expire(now(), [this](Fiber* f) { ready(f, WakeReason::timed_out); });
}

// ------------------------------------------------------------------- fds

IoSlot& Scheduler::register_fd(int fd, const char* call) {
  if (fd < 0) raise_off_small_stack([&] { platform::throw_system_error(EBADF, fmt::format("{}(fd={})", call, fd)); });
  std::size_t chunk = static_cast<std::size_t>(fd) / kSlotChunk;
  if (chunk >= slots_.size()) slots_.resize(chunk + 1);
  if (!slots_[chunk]) slots_[chunk] = std::make_unique<IoSlot[]>(kSlotChunk);
  IoSlot& s = slots_[chunk][static_cast<std::size_t>(fd) % kSlotChunk];
  if (!s.registered) {
    // On the side stack, catch and rethrow included (see raise_off_small_stack).
    off_small_stack([&] {
      try {
        poller_.add(fd, s);
      } catch (const std::system_error& e) {
        // The poller names its own call ("epoll_ctl(ADD, fd=5): ..."); put the
        // user's call in front, and its error text once, at the end.
        std::string inner = e.what();
        const std::string tail = ": " + e.code().message();
        if (inner.ends_with(tail)) inner.resize(inner.size() - tail.size());
        throw std::system_error(e.code(), fmt::format("{}(fd={}): {}", call, fd, inner));
      }
    });
    ++watched_fds_;
  }
  return s;
}

void Scheduler::forget(int fd) noexcept {
  if (fd < 0) return;
  std::size_t chunk = static_cast<std::size_t>(fd) / kSlotChunk;
  if (chunk >= slots_.size() || !slots_[chunk]) return;
  IoSlot& s = slots_[chunk][static_cast<std::size_t>(fd) % kSlotChunk];
  if (!s.registered) return;
  off_small_stack([&] { poller_.remove(fd); });
  --watched_fds_;
  ++s.seq;
  s.registered = false;
  s.read_ready = s.write_ready = s.hangup = false;
  if (s.reader) ready(std::exchange(s.reader, nullptr), WakeReason::closed);
  if (s.writer) ready(std::exchange(s.writer, nullptr), WakeReason::closed);
}

// ------------------------------------------------------- source slots

IoSlot& Scheduler::acquire_source_slot() {
  if (free_sources_.empty()) {
    // Chunks keep every slot's address fixed for the scheduler's lifetime.
    auto chunk = std::make_unique<IoSlot[]>(kSourceChunk);
    free_sources_.reserve(free_sources_.size() + kSourceChunk);
    for (std::size_t i = kSourceChunk; i-- > 0;) free_sources_.push_back(&chunk[i]);
    source_chunks_.push_back(std::move(chunk));
  }
  IoSlot* s = free_sources_.back();
  free_sources_.pop_back();
  s->registered = true;
  ++watched_fds_;
  return *s;
}

void Scheduler::release_source_slot(IoSlot& s) noexcept {
  SPINDLE_ASSERT(s.registered, "release of a source slot that is not in use");
  --watched_fds_;
  ++s.seq;
  s.registered = false;
  s.read_ready = s.write_ready = s.hangup = false;
  if (s.reader) ready(std::exchange(s.reader, nullptr), WakeReason::closed);
  if (s.writer) ready(std::exchange(s.writer, nullptr), WakeReason::closed);
  free_sources_.push_back(&s);
}

// ======================================================= the wait API

Fiber* current_fiber() noexcept {
  Scheduler* s = Scheduler::current();
  return s ? s->running() : nullptr;
}

std::int64_t now_ns() noexcept {
  Scheduler* s = Scheduler::current();
  return s ? s->now() : steady_ns();
}

namespace {
[[gnu::noinline]] Fiber* enter_wait_checked(Scheduler* s, Fiber* f, const char* call) {
  check_interrupt(s, f, call);
  return f;
}
}  // namespace

// Every blocking call starts here, most of them without parking: the common
// case (on a fiber, no cancellation or Timeout scope) is a few loads and no
// stack frame; the rest is out of line.
Fiber* enter_wait(const char* call) {
  Scheduler* s = Scheduler::current();
  if (!s) [[unlikely]]
    throw_outside_fiber(call);
  Fiber* f = s->running();
  if (f->attention) [[unlikely]]
    return enter_wait_checked(s, f, call);
  return f;
}

WakeReason park(std::int64_t deadline_ns) noexcept {
  Scheduler* s = Scheduler::current();
  SPINDLE_ASSERT(s, "park() outside a fiber");
  return s->park(s->running(), deadline_ns);
}

namespace {
[[gnu::noinline]] Fiber* enter_slot_wait_checked(Scheduler* s, Fiber* f, const char* call, SlotName name) {
  check_interrupt(s, f, call, &name);
  return f;
}

// enter_wait for a wait on a slot: a Timeout already due names what the call
// would have waited on.
Fiber* enter_slot_wait(const char* call, SlotName name) {
  Scheduler* s = Scheduler::current();
  if (!s) [[unlikely]]
    throw_outside_fiber(call);
  Fiber* f = s->running();
  if (f->attention) [[unlikely]]
    return enter_slot_wait_checked(s, f, call, name);
  return f;
}

WakeReason leave_wait_named(WakeReason r, std::int64_t own_deadline_ns, const char* call, const SlotName* name) {
  Scheduler* s = Scheduler::current();
  Fiber* f = s->running();
  if (r == WakeReason::cancelled) {
    f->cancel_requested = false;
    f->refresh_attention();
    throw Cancelled{};
  }
  if (r == WakeReason::timed_out) {
    const std::int64_t scope = scope_deadline_at(f, std::uncaught_exceptions());
    if (scope < own_deadline_ns) {
      std::int64_t now = s->now();
      if (now >= scope) throw_timeout(f, now, call, name);
    }
  }
  return r;
}
}  // namespace

WakeReason leave_wait(WakeReason r, std::int64_t own_deadline_ns, const char* call) {
  return leave_wait_named(r, own_deadline_ns, call, nullptr);
}

void ready(Fiber* f, WakeReason r) noexcept { f->sched->ready(f, r); }

void ready_node(WaitNode& node) noexcept {
  Scheduler* here = Scheduler::current();
  if (here == node.sched)
    here->ready(node.fiber, WakeReason::ready);
  else
    node.sched->post_remote(node.fiber, node.seq);
}

void settle_remote_wake(WaitNode& node) noexcept { node.sched->drain_remote(); }

void request_cancel(Fiber* f) noexcept { f->sched->request_cancel(f); }

void release_fiber(Fiber* f) noexcept {
  SPINDLE_ASSERT(f->refs > 0, "fiber reference count underflow");
  if (--f->refs == 0) f->destroy(f);
}

void start_fiber(Fiber* f, std::string&& name, std::size_t stack_size) {
  require_scheduler("spindle::spawn").start(f, std::move(name), stack_size);
}

bool wait_done(Fiber* target, std::int64_t deadline_ns, const char* call) {
  if (target->state == FiberState::done) return true;
  Fiber* f = enter_wait(call);
  if (target == f)
    throw std::system_error(std::make_error_code(std::errc::resource_deadlock_would_occur),
                            fmt::format("{}: a fiber cannot wait for itself", call));
  if (target->sched != f->sched)
    throw std::logic_error(fmt::format("{}: the task belongs to another thread's scheduler", call));
  while (target->state != FiberState::done) {
    WaitNode node{.fiber = f};
    target->joiners.push_back(node);
    WakeReason r = park(deadline_ns);
    target->joiners.remove(node);
    if (leave_wait(r, deadline_ns, call) == WakeReason::timed_out) return false;
  }
  return true;
}

void wait_done_shielded(Fiber* target) noexcept {
  if (target->state == FiberState::done) return;
  Fiber* f = current_fiber();
  SPINDLE_ASSERT(f && f != target && f->sched == target->sched,
                 "a running task was destroyed outside a fiber of its own scheduler");
  Shield shield;
  while (target->state != FiberState::done) {
    WaitNode node{.fiber = f};
    target->joiners.push_back(node);
    park(kNoDeadline);
    target->joiners.remove(node);
  }
}

// ---------------------------------------------------------- run()

RunScope::RunScope(const RunOptions& options) {
  if (Scheduler::current())
    throw std::logic_error("spindle::run called inside spindle::run (one scheduler per thread)");
  sched_ = new Scheduler(options);
}

RunScope::~RunScope() { delete sched_; }

void RunScope::finish(Fiber* root) noexcept { sched_->finish_run(root); }

// ---------------------------------------------------------- gather

void gather_wait(Fiber* const* fibers, std::size_t n, bool settled, const char* call) {
  auto all_done = [&] {
    for (std::size_t i = 0; i < n; ++i)
      if (fibers[i]->state != FiberState::done) return false;
    return true;
  };
  auto cancel_all_and_wait = [&] {
    for (std::size_t i = 0; i < n; ++i) request_cancel(fibers[i]);
    for (std::size_t i = 0; i < n; ++i) wait_done_shielded(fibers[i]);
  };
  for (std::size_t i = 0; i < n; ++i)
    if (!fibers[i]) throw std::system_error(make_error_code(errc::no_state), call);
  // When each fiber finished, as stamped by fiber_main on our join node; 0
  // for those already done when gather started (taken in argument order).
  std::vector<std::uintptr_t> finished_at(n, 0);
  // Rethrows the first failure (in time), after cancelling and waiting for
  // the rest. A real error is preferred to a Cancelled that it may have caused.
  auto fail_fast = [&] {
    if (settled) return;
    std::size_t bad = n;
    for (std::size_t i = 0; i < n; ++i) {
      Fiber* c = fibers[i];
      if (c->state != FiberState::done || !c->error) continue;
      if (bad == n) {
        bad = i;
        continue;
      }
      const bool real = !c->cancelled_exit, bad_real = !fibers[bad]->cancelled_exit;
      if ((real && !bad_real) || (real == bad_real && finished_at[i] < finished_at[bad])) bad = i;
    }
    if (bad == n) return;
    cancel_all_and_wait();
    std::rethrow_exception(fibers[bad]->error);
  };
  if (all_done()) return fail_fast();
  Fiber* f = nullptr;
  try {
    f = enter_wait(call);
  } catch (...) {
    cancel_all_and_wait();
    throw;
  }
  std::vector<WaitNode> nodes(n);
  while (!all_done()) {
    fail_fast();
    for (std::size_t i = 0; i < n; ++i) {
      nodes[i] = WaitNode{.fiber = f};
      if (fibers[i]->state != FiberState::done) fibers[i]->joiners.push_back(nodes[i]);
    }
    WakeReason r = park(kNoDeadline);
    for (std::size_t i = 0; i < n; ++i) {
      if (nodes[i].value != 0) finished_at[i] = nodes[i].value;  // it finished meanwhile
      fibers[i]->joiners.remove(nodes[i]);
    }
    try {
      leave_wait(r, kNoDeadline, call);
    } catch (...) {
      cancel_all_and_wait();
      throw;
    }
  }
  fail_fast();
}

// ---------------------------------------------------------- TaskGroup

void group_attach(GroupCore& g, Fiber* child) noexcept {
  ++child->refs;
  child->group = &g;
  g.children.push_back(child);
  ++g.running;
  if (g.failed) request_cancel(child);
}

void group_cancel(GroupCore& g) noexcept {
  for (Fiber* c : g.children) request_cancel(c);
}

void group_join(GroupCore& g, const char* call) {
  if (g.running > 0) {
    Fiber* f = nullptr;
    try {
      f = enter_wait(call);
    } catch (...) {
      group_abandon(g);
      throw;
    }
    while (g.running > 0) {
      WaitNode node{.fiber = f};
      g.waiters.push_back(node);
      WakeReason r = park(kNoDeadline);
      g.waiters.remove(node);
      try {
        leave_wait(r, kNoDeadline, call);
      } catch (...) {
        group_abandon(g);
        throw;
      }
    }
  }
  if (g.first_error) std::rethrow_exception(std::exchange(g.first_error, nullptr));
}

void group_abandon(GroupCore& g) noexcept {
  group_cancel(g);
  for (Fiber* c : g.children) wait_done_shielded(c);
}

void group_release(GroupCore& g) noexcept {
  for (Fiber* c : g.children) {
    c->group = nullptr;
    release_fiber(c);
  }
  g.children.clear();
}

// ---------------------------------------------------------- Future

bool FutureCore::wait_until(std::int64_t deadline_ns, const char* call) {
  {
    std::lock_guard lock(mu);
    if (ready) return true;
  }
  Fiber* f = enter_wait(call);
  for (;;) {
    WaitNode node{.fiber = f, .sched = f->sched, .seq = f->park_seq};
    {
      std::lock_guard lock(mu);
      if (ready) return true;
      waiters.push_back(node);
    }
    WakeReason r = park(deadline_ns);
    bool handed;
    {
      std::lock_guard lock(mu);
      handed = !node.linked;
      waiters.remove(node);
    }
    // A setter on another thread may have queued our wake after we resumed
    // for another reason; consume it before this frame goes away.
    if (handed && r != WakeReason::ready) settle_remote_wake(node);
    if (leave_wait(r, deadline_ns, call) == WakeReason::timed_out && !handed) return false;
    if (handed) return true;
  }
}

void FutureCore::wake_all_locked() noexcept {
  ready = true;
  while (WaitNode* n = waiters.pop_front()) ready_node(*n);
}

void FutureCore::throw_satisfied(const char* call) {
  throw std::system_error(make_error_code(errc::promise_already_satisfied), call);
}

}  // namespace spindle::detail

// ============================================================ public API

namespace spindle {

TimePoint now() noexcept { return TimePoint(std::chrono::nanoseconds(detail::now_ns())); }

namespace this_fiber {

namespace {
// Out of line so that yield() itself saves no registers (see Scheduler::yield).
// Not noreturn, and noipa so that GCC does not infer it: GCC never tail-calls
// a noreturn function, and a call here costs yield() a frame.
[[gnu::noipa]] void yield_outside_fiber() {
  throw std::logic_error("spindle::this_fiber::yield called outside a fiber (no spindle::run on this thread)");
}

[[gnu::noinline]] void yield_checked(detail::Scheduler* s, detail::Fiber* f) {
  detail::check_interrupt(s, f, "spindle::this_fiber::yield");
  s->yield(f);
}
}  // namespace

void yield() {
  using namespace detail;
  Scheduler* s = Scheduler::current();
  if (!s) [[unlikely]]
    return yield_outside_fiber();
  Fiber* f = s->running();
  if (f->attention) [[unlikely]]
    return yield_checked(s, f);
  s->yield(f);
}

void sleep_until(TimePoint deadline) {
  using namespace detail;
  const char* call = "spindle::this_fiber::sleep_until";
  Fiber* f = enter_wait(call);
  const std::int64_t d = to_ns(deadline);
  // A deadline already passed is still a scheduling point, like sleep_for(0):
  // a loop that has fallen behind its schedule must not starve the others.
  if (now_ns() >= d) {
    f->sched->yield(f);
    return;
  }
  // Spurious wake-ups cannot happen (nothing else knows this fiber), but a
  // manual clock set backwards could; loop until the deadline has passed.
  while (now_ns() < d) {
    if (leave_wait(park(d), d, call) == WakeReason::ready) continue;
  }
}

std::string name() {
  detail::Fiber* f = detail::current_fiber();
  if (!f) throw std::logic_error("spindle::this_fiber::name called outside a fiber");
  return detail::fiber_name(f);
}

std::uint64_t id() noexcept {
  detail::Fiber* f = detail::current_fiber();
  return f ? f->id : 0;
}

}  // namespace this_fiber

// ---------------------------------------------------------- Timeout, Shield

Timeout::Timeout(Duration d) : Timeout(detail::deadline_after(spindle::now(), d)) {}

Timeout::Timeout(TimePoint deadline) {
  using namespace detail;
  Scheduler& s = require_scheduler("spindle::Timeout");
  fiber_ = s.running();
  rec_.deadline = to_ns(deadline);
  rec_.outer_min = fiber_->scope_deadline;
  rec_.outer = fiber_->scopes;
  rec_.uncaught = std::uncaught_exceptions();
  fiber_->scopes = &rec_;
  fiber_->scope_deadline = std::min(rec_.outer_min, rec_.deadline);
  fiber_->refresh_attention();
}

Timeout::~Timeout() {
  SPINDLE_ASSERT(fiber_->scopes == &rec_, "Timeout scopes closed out of order");
  fiber_->scopes = rec_.outer;
  fiber_->scope_deadline = rec_.outer_min;
  fiber_->refresh_attention();
}

TimePoint Timeout::deadline() const noexcept { return TimePoint(std::chrono::nanoseconds(rec_.deadline)); }

Shield::Shield() {
  fiber_ = detail::require_scheduler("spindle::Shield").running();
  ++fiber_->shield_depth;
  saved_scope_deadline_ = std::exchange(fiber_->scope_deadline, detail::kNoDeadline);
  fiber_->refresh_attention();
}

Shield::~Shield() {
  --fiber_->shield_depth;
  fiber_->scope_deadline = saved_scope_deadline_;
  fiber_->refresh_attention();
}

// ---------------------------------------------------------- fd waits

namespace detail {

namespace {
// Out of line: formatting the message inline would give every wait a stack
// frame for it.
[[noreturn, gnu::noinline, gnu::cold]] void two_waiters(SlotName name) noexcept {
  assert_fail(__FILE__, __LINE__, "waiter == nullptr || waiter->state != FiberState::parked",
              fmt::format("two fibers wait on {}={} in one direction", name.key, name.value));
}

[[noreturn, gnu::noinline, gnu::cold]] void throw_forgotten(const char* call, SlotName name) {
  raise_off_small_stack([&] {
    platform::throw_system_error(
        EBADF, fmt::format("{}({}={}): {} was forgotten while waiting", call, name.key, name.value, name.key));
  });
}
}  // namespace

WakeReason park_on_slot(Fiber* f, IoSlot& slot, bool write, SlotName name) noexcept {
  bool& edge = write ? slot.write_ready : slot.read_ready;
  if (edge) {
    edge = false;
    return WakeReason::ready;
  }
  Fiber*& waiter = write ? slot.writer : slot.reader;
  // A waiter that a cancellation or a Timeout readied, but that has not run
  // yet, still sits in the slot: it no longer waits (and on resuming clears
  // only its own entry), so another fiber may take the slot over.
  if (waiter != nullptr && waiter->state == FiberState::parked) [[unlikely]]
    two_waiters(name);
  waiter = f;
  WakeReason r = f->sched->park(f, kNoDeadline);
  // The slot may have been forgotten and reused meanwhile; only clear our own entry.
  if (waiter == f) waiter = nullptr;
  return r;
}

void wait_slot(Fiber* f, IoSlot& slot, bool write, const char* call, SlotName name) {
  const WakeReason r = park_on_slot(f, slot, write, name);
  if (r == WakeReason::closed) [[unlikely]]
    throw_forgotten(call, name);
  leave_wait_named(r, kNoDeadline, call, &name);
}

}  // namespace detail

namespace {
void wait_io(int fd, bool write, const char* call) {
  using namespace detail;
  Fiber* f = enter_slot_wait(call, SlotName{"fd", fd});
  IoSlot& slot = f->sched->slot_for(fd, call);
  wait_slot(f, slot, write, call, SlotName{"fd", fd});
}
}  // namespace

void wait_readable(int fd) { wait_io(fd, false, "spindle::wait_readable"); }

void detail::wait_readable_unless_closed(int fd, const char* call) {
  Fiber* f = enter_slot_wait(call, SlotName{"fd", fd});
  IoSlot& slot = f->sched->slot_for(fd, call);
  if (slot.hangup) return;
  wait_slot(f, slot, false, call, SlotName{"fd", fd});
}
void wait_writable(int fd) { wait_io(fd, true, "spindle::wait_writable"); }

void forget_fd(int fd) noexcept {
  if (auto* s = detail::Scheduler::current()) s->forget(fd);
}

}  // namespace spindle
