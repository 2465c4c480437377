// Queue<T>, LifoQueue<T>, PriorityQueue<T, Compare>: asyncio's queues.
//
//   spindle::Queue<Order> orders(10);    // maxsize 10; 0 = unbounded
//   orders.put(order);                   // parks while full
//   Order o = orders.get();              // parks while empty
//   orders.task_done();                  // after o was dealt with
//   orders.join();                       // parks until every item is done
//
// Order of items: Queue is FIFO, LifoQueue LIFO, PriorityQueue gives the
// smallest item first by Compare (std::less<T> by default: asyncio's order,
// and the opposite of std::priority_queue's), FIFO among equal items.
//
// Order of waiters: FIFO on both sides, with hand-off. A put() that finds a
// getter waiting moves the item straight into that getter's hands; a get()
// that frees a place while putters wait reserves the place for the longest
// waiting putter, which then puts its item. So neither side can overtake
// the fibers already waiting, and an item handed to a getter counts against
// maxsize until the getter has it: size() + the items being handed over +
// the places reserved for putters never exceed maxsize.
//
// Interrupted hand-off (the getter or putter resumes cancelled or timed out
// just after the hand-off chose it):
//   - a getter gives its item back: to the next waiting getter, or to the
//     head of the queue (front of a Queue, top of a LifoQueue, its place by
//     priority in a PriorityQueue); the item is never lost or duplicated;
//   - a putter passes its reserved place on to the next putter, or frees
//     it; its item was not put.
// Then it throws Cancelled / TimeoutError (try_*_for/until: empty/false).
//
// Shutdown, as in Python 3.13: after shutdown(), put and its variants throw
// QueueShutDown, and parked putters are woken to throw it; getters take what
// is left and then throw QueueShutDown (parked getters, whose queue is empty,
// throw at once). shutdown(true) also discards the items still queued,
// counting each as done for join(). An item already handed to a getter is
// still delivered to it.
//
// Non-blocking calls: try_put/try_get return false/empty, put_nowait/
// get_nowait throw QueueFull/QueueEmpty; on a shut-down queue they throw
// QueueShutDown instead (a stopped queue is not a full or empty one).
// get() with an item ready, put() with room, and join() with nothing
// unfinished complete at once and are not suspension points (as in asyncio).
//
// Threads (the queue has its own mutex):
//   put, try_put_for/until  a fiber of any scheduler thread, or a plain OS
//                           thread that does not run spindle: a full queue
//                           then blocks that thread (a producer thread
//                           feeding fibers); the fibers it wakes are woken
//                           through their pollers.
//   try_put, put_nowait, try_get, get_nowait, task_done, shutdown, size,
//   empty, full, maxsize, is_shut_down      any thread.
//   get, try_get_for/until, join            a fiber of any scheduler thread
//                           when they have to park (std::logic_error outside).
// The queue must outlive every waiter. T's move constructor should not
// throw: an item moved while handed over must not be lost half-way.
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <spindle/clock.hpp>
#include <spindle/detail/fiber.hpp>
#include <spindle/detail/sync_mutex.hpp>

namespace spindle {

// put_nowait on a full queue (asyncio.QueueFull).
class QueueFull : public std::runtime_error {
 public:
  explicit QueueFull(const std::string& what) : std::runtime_error(what) {}
};

// get_nowait on an empty queue (asyncio.QueueEmpty).
class QueueEmpty : public std::runtime_error {
 public:
  explicit QueueEmpty(const std::string& what) : std::runtime_error(what) {}
};

// Any put on a shut-down queue; any get on a shut-down queue once it is
// empty (asyncio.QueueShutDown).
class QueueShutDown : public std::runtime_error {
 public:
  explicit QueueShutDown(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {

// A parked getter, putter or joiner. Putters may be plain OS threads: they
// wait on a condition variable of their own instead of parking.
struct QueueWaiter : WaitNode {
  std::condition_variable_any* thread_cv = nullptr;  // a plain thread's; null for a fiber
  void* slot = nullptr;                              // getters: their std::optional<T>
  bool shut_down = false;                            // woken by shutdown(), handed nothing
};

// The names of one queue type's calls, for errors.
struct QueueCalls {
  const char* put;
  const char* try_put;
  const char* try_put_until;
  const char* put_nowait;
  const char* get;
  const char* try_get;
  const char* try_get_until;
  const char* get_nowait;
  const char* task_done;
  const char* join;
};

// The non-template half: counts, waiter lists and the waits (runtime/sync.cpp).
class QueueCore {
 public:
  QueueCore(const QueueCore&) = delete;
  QueueCore& operator=(const QueueCore&) = delete;

  std::size_t maxsize() const noexcept { return maxsize_; }
  // Items a get() can take now.
  std::size_t size() const;
  bool empty() const { return size() == 0; }
  // True when a put() would park now.
  bool full() const;
  bool is_shut_down() const;

  // One queued item has been dealt with; std::invalid_argument when called
  // more often than items were put (asyncio's ValueError).
  void task_done();
  // Parks until every item put has been marked done.
  void join();

 protected:
  QueueCore(std::size_t maxsize, const QueueCalls& calls) noexcept : calls_(&calls), maxsize_(maxsize) {}
  ~QueueCore();

  // Moves a given-back item on: to the next getter or the queue's head.
  using GiveBack = void (*)(QueueCore* core, void* slot);

  // All of the following run with mu_ held.
  bool room_locked() const noexcept { return maxsize_ == 0 || count_ + in_flight_ + reserved_ < maxsize_; }
  bool may_put_now_locked() const noexcept { return putters_.empty() && room_locked(); }
  // Reserves free places for the longest waiting putters.
  void grant_room_locked() noexcept {
    if (!putters_.empty()) grant_room_slow();
  }
  void grant_room_slow() noexcept;
  void wake_locked(QueueWaiter& w) noexcept;
  // Waits (lk held on entry and on return) until the caller may put: true,
  // or false when the own deadline passed. A fiber parks (and may throw
  // Cancelled or TimeoutError); a plain OS thread blocks. Throws
  // QueueShutDown when the queue is shut down meanwhile.
  bool wait_room(std::unique_lock<SyncMutex>& lk, std::int64_t deadline_ns, const char* call);
  // Parks a getter (lk held on entry and on return) until an item has been
  // moved into *node.slot: true, or false when the own deadline passed.
  bool wait_item(std::unique_lock<SyncMutex>& lk, QueueWaiter& node, std::int64_t deadline_ns,
                 const char* call, GiveBack give_back);
  void shutdown_locked(bool immediate, std::size_t discarded) noexcept;
  // `n` items are done: task_done(), or discarded by shutdown(true).
  void finish_tasks_locked(std::size_t n) noexcept;
  [[noreturn]] static void throw_shut_down(const char* call);
  [[noreturn]] static void throw_full(const char* call);
  [[noreturn]] static void throw_empty(const char* call);

  const QueueCalls* calls_;
  mutable SyncMutex mu_;
  const std::size_t maxsize_;  // 0: unbounded
  // All guarded by mu_.
  std::size_t count_ = 0;       // items in the store
  std::size_t in_flight_ = 0;   // items handed to getters that have not resumed yet
  std::size_t reserved_ = 0;    // places granted to putters that have not resumed yet
  std::size_t unfinished_ = 0;  // items put and not yet task_done()
  bool shut_down_ = false;
  bool immediate_ = false;  // shutdown(true): given-back items are discarded
  WaitList getters_;        // fibers; empty whenever count_ > 0
  WaitList putters_;        // fibers and plain threads; empty whenever there is room
  WaitList joiners_;        // fibers parked in join()
};

// Item stores: the only difference between the three queues.

// A growable ring buffer: a FIFO queue's store. std::deque would do, but
// its push_back is not inlined and it allocates a block every 64 items even
// when the queue stays short; a put/get pair here is a handful of
// instructions, and the buffer only grows (to the largest size seen).
template <class T>
class FifoStore {
 public:
  FifoStore() = default;
  FifoStore(const FifoStore&) = delete;
  FifoStore& operator=(const FifoStore&) = delete;
  ~FifoStore() {
    while (size_ > 0) (void)pop();
    std::allocator<T>().deallocate(items_, capacity_);
  }
  static constexpr QueueCalls kCalls{"spindle::Queue::put",           "spindle::Queue::try_put",
                                     "spindle::Queue::try_put_until", "spindle::Queue::put_nowait",
                                     "spindle::Queue::get",           "spindle::Queue::try_get",
                                     "spindle::Queue::try_get_until", "spindle::Queue::get_nowait",
                                     "spindle::Queue::task_done",     "spindle::Queue::join"};
  template <class U>
  void push(U&& v) {
    if (size_ == capacity_) grow();
    std::construct_at(items_ + ((head_ + size_) & (capacity_ - 1)), std::forward<U>(v));
    ++size_;
  }
  template <class U>
  void push_head(U&& v) {
    if (size_ == capacity_) grow();
    const std::size_t at = (head_ + capacity_ - 1) & (capacity_ - 1);
    std::construct_at(items_ + at, std::forward<U>(v));
    head_ = at;
    ++size_;
  }
  T pop() {
    T* slot = items_ + head_;
    T v = std::move(*slot);
    std::destroy_at(slot);
    head_ = (head_ + 1) & (capacity_ - 1);
    --size_;
    return v;
  }
  void swap(FifoStore& o) noexcept {
    std::swap(items_, o.items_);
    std::swap(capacity_, o.capacity_);
    std::swap(head_, o.head_);
    std::swap(size_, o.size_);
  }

 private:
  // Doubles the capacity (a power of two), moving the items to the front.
  void grow() {
    const std::size_t capacity = capacity_ == 0 ? 16 : capacity_ * 2;
    T* items = std::allocator<T>().allocate(capacity);
    for (std::size_t i = 0; i < size_; ++i) {
      T* from = items_ + ((head_ + i) & (capacity_ - 1));
      std::construct_at(items + i, std::move(*from));
      std::destroy_at(from);
    }
    std::allocator<T>().deallocate(items_, capacity_);
    items_ = items;
    capacity_ = capacity;
    head_ = 0;
  }

  T* items_ = nullptr;
  std::size_t capacity_ = 0;  // 0 or a power of two
  std::size_t head_ = 0;      // index of the oldest item
  std::size_t size_ = 0;
};

template <class T>
class LifoStore {
 public:
  static constexpr QueueCalls kCalls{"spindle::LifoQueue::put",           "spindle::LifoQueue::try_put",
                                     "spindle::LifoQueue::try_put_until", "spindle::LifoQueue::put_nowait",
                                     "spindle::LifoQueue::get",           "spindle::LifoQueue::try_get",
                                     "spindle::LifoQueue::try_get_until", "spindle::LifoQueue::get_nowait",
                                     "spindle::LifoQueue::task_done",     "spindle::LifoQueue::join"};
  template <class U>
  void push(U&& v) {
    items_.emplace_back(std::forward<U>(v));
  }
  // The head of a LIFO queue is its top.
  template <class U>
  void push_head(U&& v) {
    items_.emplace_back(std::forward<U>(v));
  }
  T pop() {
    T v = std::move(items_.back());
    items_.pop_back();
    return v;
  }
  void swap(LifoStore& o) noexcept { items_.swap(o.items_); }

 private:
  std::vector<T> items_;
};

template <class T, class Compare>
class PriorityStore {
 public:
  static constexpr QueueCalls kCalls{
      "spindle::PriorityQueue::put",           "spindle::PriorityQueue::try_put",
      "spindle::PriorityQueue::try_put_until", "spindle::PriorityQueue::put_nowait",
      "spindle::PriorityQueue::get",           "spindle::PriorityQueue::try_get",
      "spindle::PriorityQueue::try_get_until", "spindle::PriorityQueue::get_nowait",
      "spindle::PriorityQueue::task_done",     "spindle::PriorityQueue::join"};
  template <class U>
  void push(U&& v) {
    add(T(std::forward<U>(v)), next_++);
  }
  // A given-back item goes before every item equal to it.
  template <class U>
  void push_head(U&& v) {
    add(T(std::forward<U>(v)), head_--);
  }
  T pop() {
    std::pop_heap(heap_.begin(), heap_.end(), Later{&compare_});
    T v = std::move(heap_.back().value);
    heap_.pop_back();
    return v;
  }
  void swap(PriorityStore& o) noexcept {
    heap_.swap(o.heap_);
    std::swap(next_, o.next_);
    std::swap(head_, o.head_);
  }

 private:
  struct Entry {
    T value;
    std::int64_t seq;  // insertion order: equal items leave FIFO
  };
  // std::*_heap keep the greatest element by this "less" on top, so "less"
  // is "leaves later": the top is the item that leaves first.
  struct Later {
    const Compare* compare;
    bool operator()(const Entry& a, const Entry& b) const {
      if ((*compare)(b.value, a.value)) return true;
      if ((*compare)(a.value, b.value)) return false;
      return a.seq > b.seq;
    }
  };
  void add(T&& v, std::int64_t seq) {
    heap_.push_back(Entry{std::move(v), seq});
    std::push_heap(heap_.begin(), heap_.end(), Later{&compare_});
  }

  std::vector<Entry> heap_;
  std::int64_t next_ = 0;   // seq of the next item put
  std::int64_t head_ = -1;  // seq of the next item given back
  [[no_unique_address]] Compare compare_{};
};

template <class T, class Store>
class BasicQueue : public QueueCore {
 public:
  using value_type = T;

  explicit BasicQueue(std::size_t maxsize = 0) : QueueCore(maxsize, Store::kCalls) {}

  // Puts an item, parking (or blocking a plain thread) while the queue is
  // full. The item is moved from only if it was put.
  template <class U = T>
  requires std::constructible_from<T, U&&>
  void put(U&& item) { (void)put_until(std::forward<U>(item), kNoDeadline, Store::kCalls.put); }
  // Puts the item if that needs no waiting; false when the queue is full.
  template <class U = T>
  requires std::constructible_from<T, U&&>
  bool try_put(U&& item) {
    std::lock_guard lk(mu_);
    if (shut_down_) throw_shut_down(Store::kCalls.try_put);
    if (!may_put_now_locked()) return false;
    put_locked(std::forward<U>(item));
    return true;
  }
  // As try_put, but a full queue throws QueueFull.
  template <class U = T>
  requires std::constructible_from<T, U&&>
  void put_nowait(U&& item) {
    std::lock_guard lk(mu_);
    if (shut_down_) throw_shut_down(Store::kCalls.put_nowait);
    if (!may_put_now_locked()) throw_full(Store::kCalls.put_nowait);
    put_locked(std::forward<U>(item));
  }
  // As put, giving up (false, item untouched) once the deadline passed.
  template <class U = T, class Rep, class Period>
  requires std::constructible_from<T, U&&>
  bool try_put_for(U&& item, std::chrono::duration<Rep, Period> d) {
    return try_put_until(std::forward<U>(item), detail::deadline_after(spindle::now(), d));
  }
  template <class U = T>
  requires std::constructible_from<T, U&&>
  bool try_put_until(U&& item, TimePoint deadline) {
    return put_until(std::forward<U>(item), to_ns(deadline), Store::kCalls.try_put_until);
  }

  // Takes the next item, parking while the queue is empty.
  T get() { return std::move(*get_until(kNoDeadline, Store::kCalls.get)); }
  // The next item if one is there now; empty otherwise.
  std::optional<T> try_get() {
    std::lock_guard lk(mu_);
    if (count_ > 0) return take_locked();
    if (shut_down_) throw_shut_down(Store::kCalls.try_get);
    return std::nullopt;
  }
  // As try_get, but an empty queue throws QueueEmpty.
  T get_nowait() {
    std::lock_guard lk(mu_);
    if (count_ > 0) return take_locked();
    if (shut_down_) throw_shut_down(Store::kCalls.get_nowait);
    throw_empty(Store::kCalls.get_nowait);
  }
  // As get, giving up (empty) once the deadline passed.
  template <class Rep, class Period>
  std::optional<T> try_get_for(std::chrono::duration<Rep, Period> d) {
    return try_get_until(detail::deadline_after(spindle::now(), d));
  }
  std::optional<T> try_get_until(TimePoint deadline) {
    return get_until(to_ns(deadline), Store::kCalls.try_get_until);
  }

  // Stops the queue (see the header comment); immediate also discards the
  // items still queued. Later calls change nothing more, except that
  // shutdown(true) after shutdown() still discards.
  void shutdown(bool immediate = false) {
    Store discarded;  // destroyed after the mutex is released
    {
      std::lock_guard lk(mu_);
      std::size_t n = 0;
      if (immediate) {
        discarded.swap(store_);
        n = std::exchange(count_, 0);
      }
      shutdown_locked(immediate, n);
    }
  }

 private:
  template <class U>
  bool put_until(U&& item, std::int64_t deadline_ns, const char* call) {
    std::unique_lock lk(mu_);
    if (shut_down_) throw_shut_down(call);
    if (!may_put_now_locked() && !wait_room(lk, deadline_ns, call)) return false;
    put_locked(std::forward<U>(item));
    return true;
  }

  // Under mu_, with a place for the item (free or reserved for the caller).
  template <class U>
  void put_locked(U&& item) {
    try {
      deliver_locked(std::forward<U>(item), false);
    } catch (...) {
      grant_room_locked();  // the place the item did not take
      throw;
    }
    ++unfinished_;
  }

  // To the longest waiting getter, or into the store (at its head for an
  // item given back).
  template <class U>
  void deliver_locked(U&& item, bool head) {
    if (!getters_.empty()) {
      auto& g = static_cast<QueueWaiter&>(*getters_.front());
      // Construct first: if that throws, the getter is still waiting.
      static_cast<std::optional<T>*>(g.slot)->emplace(std::forward<U>(item));
      getters_.pop_front();
      ++in_flight_;
      wake_locked(g);
      return;
    }
    if (head)
      store_.push_head(std::forward<U>(item));
    else
      store_.push(std::forward<U>(item));
    ++count_;
  }

  T take_locked() {
    T item = store_.pop();
    --count_;
    grant_room_locked();
    return item;
  }

  std::optional<T> get_until(std::int64_t deadline_ns, const char* call) {
    std::optional<T> slot;  // declared before lk: destroyed after the unlock
    std::unique_lock lk(mu_);
    if (count_ > 0) return take_locked();
    if (shut_down_) throw_shut_down(call);
    QueueWaiter node;
    node.slot = &slot;
    if (!wait_item(lk, node, deadline_ns, call, &give_back)) return std::nullopt;
    return slot;
  }

  static void give_back(QueueCore* core, void* slot) {
    auto& item = *static_cast<std::optional<T>*>(slot);
    static_cast<BasicQueue*>(core)->deliver_locked(std::move(*item), true);
    item.reset();
  }

  Store store_;  // guarded by mu_
};

}  // namespace detail

template <class T>
class Queue : public detail::BasicQueue<T, detail::FifoStore<T>> {
 public:
  using detail::BasicQueue<T, detail::FifoStore<T>>::BasicQueue;
};

template <class T>
class LifoQueue : public detail::BasicQueue<T, detail::LifoStore<T>> {
 public:
  using detail::BasicQueue<T, detail::LifoStore<T>>::BasicQueue;
};

template <class T, class Compare = std::less<T>>
class PriorityQueue : public detail::BasicQueue<T, detail::PriorityStore<T, Compare>> {
 public:
  using detail::BasicQueue<T, detail::PriorityStore<T, Compare>>::BasicQueue;
};

}  // namespace spindle
