/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * kpatch-macros.h: kpbuild's implementation of the patch-author macros that
 * patches written for kpatch-build use, so such patches build unchanged.
 *
 * kpbuild puts this header on the include path of every unit it compiles.
 * Each macro leaves a record in a section of its own; elfdiff reads those
 * sections from the patched object and never copies them into the module:
 *
 *   KPATCH_PRE_PATCH_CALLBACK(fn)     .kpatch.callbacks.pre_patch
 *   KPATCH_POST_PATCH_CALLBACK(fn)    .kpatch.callbacks.post_patch
 *   KPATCH_PRE_UNPATCH_CALLBACK(fn)   .kpatch.callbacks.pre_unpatch
 *   KPATCH_POST_UNPATCH_CALLBACK(fn)  .kpatch.callbacks.post_unpatch
 *	The livepatch callback of the object (vmlinux or the module) the unit
 *	belongs to, as with kpbuild-macros.h: fn takes the struct klp_object
 *	(`patch_object`); the pre-patch callback returns 0 or a negative errno,
 *	which stops the patch (or the module's load). fn must be a function
 *	the patch adds; one callback of each kind per object.
 *	Each record is { fn, NULL }: a function pointer, then an object name
 *	slot that kpbuild never reads (it knows the unit's object).
 *
 *   KPATCH_IGNORE_FUNCTION(fn)        .kpatch.ignore.functions
 *	fn is treated as unchanged whatever its code: it is not patched.
 *	For functions that change only as a side effect (a line number).
 *
 *   KPATCH_IGNORE_SECTION("name")     .kpatch.ignore.sections
 *	The named section of this unit is treated as unchanged: never
 *	compared, never copied into the module.
 *
 *   KPATCH_FORCE_UNSAFE(fn)           .kpatch.force
 *	Recorded and reported only. kpatch's own core module skipped its
 *	stack check for such a function; the livepatch core has no
 *	per-function check to skip (its consistency model switches each task
 *	when that task is safe), and kpbuild's refusals guard against
 *	modules that would crash or fail to load, so none is lifted.
 *
 *   KPATCH_PRINTK(fmt, ...)
 *	printk() on a branch of its own, so the compiler does not treat the
 *	surrounding code as cold (printk is __cold) and move or uninline it.
 *
 * KPATCH_SYSCALL_DEFINE0..6 come from kpatch-syscall.h, included below.
 */
#ifndef _KPBUILD_KPATCH_MACROS_H
#define _KPBUILD_KPATCH_MACROS_H

#if defined(__KERNEL__) && defined(CONFIG_LIVEPATCH)
#include <linux/printk.h>
#include <linux/livepatch.h>
#endif

struct klp_object;
/* kpatch's name for the callbacks' argument. */
typedef struct klp_object patch_object;

#define __KPB_KPATCH_PASTE2(a, b) a##b
#define __KPB_KPATCH_PASTE(a, b) __KPB_KPATCH_PASTE2(a, b)
#define __KPB_KPATCH_UNIQUE(prefix) __KPB_KPATCH_PASTE(prefix, __COUNTER__)

/* One callback record: the pointer's type checks fn's signature. */
#define __KPB_KPATCH_CALLBACK(kind, ret, _fn)					\
	static struct {								\
		ret (*func)(struct klp_object *);				\
		const char *objname;						\
	} __kpatch_##kind##_##_fn						\
	__attribute__((__used__, __section__(".kpatch.callbacks." #kind))) =	\
		{ _fn, (const char *)0 }

/* int fn(patch_object *): before the patch applies; non-zero stops it. */
#define KPATCH_PRE_PATCH_CALLBACK(fn) __KPB_KPATCH_CALLBACK(pre_patch, int, fn)
/* void fn(patch_object *): after the patch applied. */
#define KPATCH_POST_PATCH_CALLBACK(fn) __KPB_KPATCH_CALLBACK(post_patch, void, fn)
/* void fn(patch_object *): before the patch is removed. */
#define KPATCH_PRE_UNPATCH_CALLBACK(fn) __KPB_KPATCH_CALLBACK(pre_unpatch, void, fn)
/* void fn(patch_object *): after the patch was removed. */
#define KPATCH_POST_UNPATCH_CALLBACK(fn) __KPB_KPATCH_CALLBACK(post_unpatch, void, fn)

/* A function of this unit that is never patched, whatever its code. */
#define KPATCH_IGNORE_FUNCTION(fn)						\
	static void *__kpatch_ignore_func_##fn					\
	__attribute__((__used__, __section__(".kpatch.ignore.functions"))) =	\
		(void *)(fn)

/* A section of this unit that is never compared nor copied. */
#define KPATCH_IGNORE_SECTION(name)						\
	static const char *__KPB_KPATCH_UNIQUE(__kpatch_ignore_section_)	\
	__attribute__((__used__, __section__(".kpatch.ignore.sections"))) =	\
		(name)

/* Reported, nothing lifted: see the top of this file. */
#define KPATCH_FORCE_UNSAFE(fn)							\
	static void *__kpatch_force_func_##fn					\
	__attribute__((__used__, __section__(".kpatch.force"))) = (void *)(fn)

/*
 * The condition passes through an empty asm, so the compiler cannot prove
 * the call always happens and keeps it on a branch of its own.
 */
#define __KPB_KPATCH_OWN_PATH(call)						\
	({									\
		int __kpb_go;							\
		__asm__ __volatile__("" : "=r"(__kpb_go) : "0"(1));		\
		if (__kpb_go)							\
			call;							\
	})

/* printk() that leaves the surrounding code hot. */
#define KPATCH_PRINTK(fmt, ...) __KPB_KPATCH_OWN_PATH(printk(fmt, ##__VA_ARGS__))
/* printk_deferred() that leaves the surrounding code hot. */
#define KPATCH_PRINTK_DEFERRED(fmt, ...)					\
	__KPB_KPATCH_OWN_PATH(printk_deferred(fmt, ##__VA_ARGS__))

#include "kpatch-syscall.h"

#endif /* _KPBUILD_KPATCH_MACROS_H */
