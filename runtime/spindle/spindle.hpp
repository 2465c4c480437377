// The umbrella header: everything a spindle program uses.
#pragma once

#include <spindle/barrier.hpp>
#include <spindle/blocking.hpp>
#include <spindle/clock.hpp>
#include <spindle/condition.hpp>
#include <spindle/error.hpp>
#include <spindle/event.hpp>
#include <spindle/file.hpp>
#include <spindle/future.hpp>
#include <spindle/gather.hpp>
#include <spindle/io.hpp>
#include <spindle/lock.hpp>
#include <spindle/net.hpp>
#include <spindle/process.hpp>
#include <spindle/queue.hpp>
#include <spindle/run.hpp>
#include <spindle/semaphore.hpp>
#include <spindle/signal.hpp>
#include <spindle/task.hpp>
#include <spindle/task_group.hpp>
#include <spindle/this_fiber.hpp>
#include <spindle/timeout.hpp>
